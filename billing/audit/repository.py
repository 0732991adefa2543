"""Queries of the audit_entries table."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from billing.audit.schemas import AuditQuery
from billing.models import AuditEntry


def add_entry(session: Session, entry: AuditEntry) -> AuditEntry:
    session.add(entry)
    session.flush()
    return entry


def find_entries(session: Session, query: AuditQuery) -> Sequence[AuditEntry]:
    statement = select(AuditEntry)
    if query.actor is not None:
        statement = statement.where(AuditEntry.actor == query.actor)
    if query.action is not None:
        statement = statement.where(AuditEntry.action == query.action)
    if query.target_type is not None:
        statement = statement.where(AuditEntry.target_type == query.target_type)
    if query.target_id is not None:
        statement = statement.where(AuditEntry.target_id == query.target_id)
    if query.since is not None:
        statement = statement.where(col(AuditEntry.occurred_at) >= query.since)
    if query.until is not None:
        statement = statement.where(col(AuditEntry.occurred_at) < query.until)
    if query.after_id is not None:
        statement = statement.where(col(AuditEntry.id) > query.after_id)
    return session.exec(statement.order_by(col(AuditEntry.id)).limit(query.limit)).all()

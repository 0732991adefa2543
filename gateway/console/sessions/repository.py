"""Queries of the console_sessions table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, update
from sqlmodel import Session, col, select

from billing.models import AdminUser, ConsoleSession, Tenant


def add_session(session: Session, record: ConsoleSession) -> ConsoleSession:
    session.add(record)
    session.flush()
    return record


def find_by_token_hash(
    session: Session, token_hash: str
) -> tuple[ConsoleSession, AdminUser | None, Tenant | None] | None:
    statement = (
        select(ConsoleSession, AdminUser, Tenant)
        .outerjoin(AdminUser, col(AdminUser.id) == col(ConsoleSession.admin_user_id))
        .outerjoin(Tenant, col(Tenant.id) == col(ConsoleSession.tenant_id))
        .where(ConsoleSession.token_hash == token_hash)
    )
    row = session.exec(statement).first()
    if row is None:
        return None
    record, user, tenant = row
    return record, user, tenant


def touch(session: Session, session_id: int, now: datetime) -> None:
    session.execute(
        update(ConsoleSession).where(col(ConsoleSession.id) == session_id).values(last_seen_at=now)
    )


def revoke(session: Session, session_id: int, now: datetime) -> int:
    result = session.execute(
        update(ConsoleSession)
        .where(col(ConsoleSession.id) == session_id, col(ConsoleSession.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def revoke_user_sessions(session: Session, user: AdminUser, now: datetime) -> int:
    result = session.execute(
        update(ConsoleSession)
        .where(
            col(ConsoleSession.admin_user_id) == user.id,
            col(ConsoleSession.revoked_at).is_(None),
        )
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def revoke_subject_sessions(session: Session, kind: str, subject: str, now: datetime) -> int:
    result = session.execute(
        update(ConsoleSession)
        .where(
            col(ConsoleSession.kind) == kind,
            col(ConsoleSession.subject) == subject,
            col(ConsoleSession.revoked_at).is_(None),
        )
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def list_open_sessions(session: Session, now: datetime) -> Sequence[ConsoleSession]:
    return session.exec(
        select(ConsoleSession)
        .where(col(ConsoleSession.revoked_at).is_(None), col(ConsoleSession.expires_at) > now)
        .order_by(col(ConsoleSession.id))
    ).all()


def owner_filter(record: ConsoleSession) -> list[ColumnElement[bool]]:
    """The sessions that belong to the same person as ``record``: the same password user, the
    same SSO subject, or (portal) the same tenant."""
    if record.kind == "portal":
        return [
            col(ConsoleSession.kind) == "portal",
            col(ConsoleSession.tenant_id) == record.tenant_id,
        ]
    if record.admin_user_id is not None:
        return [col(ConsoleSession.admin_user_id) == record.admin_user_id]
    return [
        col(ConsoleSession.kind) == "admin",
        col(ConsoleSession.admin_user_id).is_(None),
        col(ConsoleSession.subject) == record.subject,
    ]


def get_session(session: Session, session_id: int) -> ConsoleSession | None:
    return session.get(ConsoleSession, session_id)


def list_owned_sessions(
    session: Session, record: ConsoleSession, now: datetime, seen_since: datetime
) -> Sequence[ConsoleSession]:
    return session.exec(
        select(ConsoleSession)
        .where(
            *owner_filter(record),
            col(ConsoleSession.revoked_at).is_(None),
            col(ConsoleSession.expires_at) > now,
            col(ConsoleSession.last_seen_at) > seen_since,
        )
        .order_by(col(ConsoleSession.last_seen_at).desc(), col(ConsoleSession.id).desc())
    ).all()


def revoke_owned(
    session: Session, record: ConsoleSession, now: datetime, *, only: int | None, keep: int | None
) -> int:
    """Revoke the open sessions of ``record``'s owner: only the one with id ``only``, or all
    but ``keep``."""
    conditions = [*owner_filter(record), col(ConsoleSession.revoked_at).is_(None)]
    if only is not None:
        conditions.append(col(ConsoleSession.id) == only)
    if keep is not None:
        conditions.append(col(ConsoleSession.id) != keep)
    result = session.execute(update(ConsoleSession).where(*conditions).values(revoked_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]


def set_user_agent(session: Session, session_id: int, user_agent: str) -> None:
    session.execute(
        update(ConsoleSession)
        .where(col(ConsoleSession.id) == session_id)
        .values(user_agent=user_agent)
    )


def set_reauthenticated(session: Session, session_id: int, now: datetime) -> None:
    session.execute(
        update(ConsoleSession)
        .where(col(ConsoleSession.id) == session_id)
        .values(reauthenticated_at=now)
    )

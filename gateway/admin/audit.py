"""Admin: the audit log."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from billing.audit.schemas import AuditEntryPublic, AuditQuery
from billing.audit.service import find
from gateway.admin.auth import AuditRead
from gateway.admin.deps import in_transaction
from gateway.deps import DatabaseDep

router = APIRouter(prefix="/admin/audit", tags=["admin: audit"])


@router.get("")
def audit_log(
    database: DatabaseDep,
    _claims: AuditRead,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntryPublic]:
    """Admin writes, oldest first, filtered; page on with ``after_id`` = the last id seen."""
    query = AuditQuery(
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
        after_id=after_id,
        limit=limit,
    )
    return in_transaction(database, lambda session: find(session, query))

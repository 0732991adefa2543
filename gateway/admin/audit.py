"""Admin: the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from billing import limits
from billing.audit.schemas import AuditEntryPublic, AuditQuery, UtcTime
from billing.audit.service import MAX_PAGE, find
from gateway.admin.auth import AuditRead
from gateway.admin.deps import in_transaction
from gateway.deps import DatabaseDep

router = APIRouter(prefix="/admin/audit", tags=["admin: audit"])


@router.get("")
def audit_log(
    database: DatabaseDep,
    _claims: AuditRead,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=300)] = None,
    since: Annotated[UtcTime | None, Query(description="From this time (UTC if no zone).")] = None,
    until: Annotated[UtcTime | None, Query(description="Before this time.")] = None,
    after_id: Annotated[int | None, Query(ge=0, le=limits.MAX_ROW_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
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

"""Releasing reservations left open by a gateway that crashed mid-request, and forgetting
Idempotency-Keys past their retention."""

from __future__ import annotations

from datetime import datetime

from billing.db import Database
from billing.idempotency.service import purge_steps
from billing.models.types import utcnow
from billing.reservations.service import expired_request_ids, release
from billing.statements import run


def release_expired(database: Database, now: datetime | None = None) -> int:
    """Release every open reservation past its expiry, one short transaction each."""
    now = now or utcnow()
    with database.transaction() as session:
        request_ids = expired_request_ids(session, now)
    released = 0
    for request_id in request_ids:
        with database.transaction() as session:
            released += release(session, request_id, now=now)
    return released


def purge_keys(database: Database, before: datetime) -> None:
    """Forget Idempotency-Keys created before ``before`` that no live attempt holds."""
    with database.transaction() as session:
        run(session.connection(), purge_steps(before))

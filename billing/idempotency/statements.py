"""The SQL of Idempotency-Key leases, built once with SQLAlchemy Core."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Executable, Select, and_, bindparam, delete, null, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billing.reservations.statements import idempotency_records as records
from billing.reservations.statements import param

CLAIM_COLUMNS = (
    "tenant_id",
    "key",
    "fingerprint",
    "state",
    "request_id",
    "lease_token",
    "lease_expires_at",
    "created_at",
)


@cache
def claim_or_take_over(kind: str) -> Executable:
    """Insert the key's record, leased to the caller; or, when the record exists for the same
    request and its last attempt failed or its lease lapsed, take the lease over. Returns the
    key's request id (the caller's own, or the original one on a takeover); no row when the
    key is someone else's, completed, or leased to a live attempt."""
    values = {column: param(records, column, f"claim_{column}") for column in CLAIM_COLUMNS}
    statement = (postgresql.insert if kind == "postgresql" else sqlite.insert)(records)
    statement = statement.values(values)
    lapsed = or_(
        records.c.lease_expires_at.is_(None),
        records.c.lease_expires_at < param(records, "lease_expires_at", "now"),
    )
    return statement.on_conflict_do_update(
        index_elements=[records.c.tenant_id, records.c.key],
        set_={
            "state": "in_progress",
            "lease_token": statement.excluded.lease_token,
            "lease_expires_at": statement.excluded.lease_expires_at,
        },
        where=and_(
            records.c.fingerprint == statement.excluded.fingerprint,
            or_(
                records.c.state == "failed",
                and_(records.c.state == "in_progress", lapsed),
            ),
        ),
    ).returning(records.c.request_id)


@cache
def read() -> Select[Any]:
    return select(
        records.c.fingerprint,
        records.c.state,
        records.c.request_id,
        records.c.lease_expires_at,
        records.c.result,
        records.c.status_code,
        records.c.media_type,
        records.c.headers,
        records.c.body,
    ).where(records.c.tenant_id == bindparam("tenant"), records.c.key == bindparam("record_key"))


def _leased_to_caller() -> Any:
    return and_(
        records.c.tenant_id == bindparam("tenant"),
        records.c.key == bindparam("record_key"),
        records.c.lease_token == bindparam("token"),
        records.c.state == "in_progress",
    )


@cache
def renew() -> Executable:
    return (
        update(records)
        .where(_leased_to_caller())
        .values(lease_expires_at=param(records, "lease_expires_at", "until"))
        .returning(records.c.request_id)
    )


@cache
def give_up() -> Executable:
    """The attempt failed before settling (its client was told so): the key is ``failed``,
    and a retry takes it over at once."""
    return (
        update(records)
        .where(_leased_to_caller())
        .values(state="failed", lease_token=null(), lease_expires_at=null())
    )


@cache
def purge() -> Executable:
    """Keys created before ``before`` whose lease is not live: completed ones (their retention
    is over) and abandoned ones (never settled, so nothing to replay)."""
    before = param(records, "created_at", "before")
    return delete(records).where(
        records.c.created_at < before,
        or_(records.c.lease_expires_at.is_(None), records.c.lease_expires_at < before),
    )

"""Idempotency keys: the first request with a key does the work; the others get its response."""

from __future__ import annotations

import json

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from billing.db import Database
from billing.errors import Conflict
from billing.models import IdempotencyRecord


def claim(
    database: Database, tenant_id: int, key: str, fingerprint: str, request_id: str
) -> IdempotencyRecord | None:
    """None when this request now owns the key; otherwise the record of the request that does
    (in progress or completed). The same key with a different request is a ``Conflict``."""
    try:
        with database.transaction() as session:
            existing = _get(session, tenant_id, key)
            if existing is None:
                session.add(
                    IdempotencyRecord(
                        tenant_id=tenant_id,
                        key=key,
                        fingerprint=fingerprint,
                        request_id=request_id,
                        state="in_progress",
                    )
                )
                return None
    except IntegrityError:
        # Another replica inserted the same key between our read and our write.
        with database.transaction() as session:
            existing = _get(session, tenant_id, key)
    if existing is None:
        return claim(database, tenant_id, key, fingerprint, request_id)
    if existing.fingerprint != fingerprint:
        raise Conflict("This Idempotency-Key was already used with a different file or parameters.")
    return existing


def lookup(database: Database, tenant_id: int, key: str) -> IdempotencyRecord | None:
    with database.transaction() as session:
        return _get(session, tenant_id, key)


def complete(
    database: Database,
    tenant_id: int,
    key: str,
    *,
    status_code: int,
    media_type: str,
    headers: dict[str, str],
    body: str,
) -> None:
    with database.transaction() as session:
        record = _get(session, tenant_id, key)
        if record is None:
            return
        record.state = "completed"
        record.status_code = status_code
        record.media_type = media_type
        record.headers = json.dumps(headers, sort_keys=True)
        record.body = body
        session.add(record)


def abandon(database: Database, tenant_id: int, key: str, request_id: str) -> None:
    """The owning request failed: free the key so a retry can do the work."""
    with database.transaction() as session:
        record = _get(session, tenant_id, key)
        if record is not None and record.request_id == request_id and record.state != "completed":
            session.delete(record)


def _get(session: Session, tenant_id: int, key: str) -> IdempotencyRecord | None:
    return session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.key == key
        )
    ).first()

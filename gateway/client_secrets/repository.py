"""Queries of the client_secrets table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, select

from billing.models import ApiKey, ClientSecret


def add_secret(session: Session, secret: ClientSecret) -> ClientSecret:
    session.add(secret)
    session.flush()
    return secret


def claim_secret(session: Session, token_hash: str, now: datetime) -> tuple[int, str] | None:
    """Mark the token used, if it is unused and unexpired, and return its key's tenant id and
    prefix. The guarded UPDATE lets exactly one of two connections (on any replicas) win."""
    claimed = session.execute(
        update(ClientSecret)
        .where(
            col(ClientSecret.token_hash) == token_hash,
            col(ClientSecret.used_at).is_(None),
            col(ClientSecret.expires_at) > now,
        )
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = session.exec(
        select(ApiKey.tenant_id, ApiKey.prefix)
        .join(ClientSecret, col(ClientSecret.api_key_id) == col(ApiKey.id))
        .where(ClientSecret.token_hash == token_hash)
    ).first()
    return None if row is None else (row[0], row[1])


def purge_secrets(session: Session, before: datetime) -> int:
    """Forget tokens that expired, or were used, before ``before``."""
    deleted = session.execute(
        delete(ClientSecret).where(
            or_(col(ClientSecret.expires_at) < before, col(ClientSecret.used_at) < before)
        )
    )
    return int(deleted.rowcount)  # type: ignore[attr-defined]

"""Queries of the portal_links table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from billing.models import PortalLink, Tenant


def add_link(session: Session, link: PortalLink) -> PortalLink:
    session.add(link)
    session.flush()
    return link


def claim_link(session: Session, token_hash: str, now: datetime) -> Tenant | None:
    """Mark the link used, if it is unused and unexpired, and return its tenant. The guarded
    UPDATE lets exactly one of two concurrent openings win."""
    claimed = session.execute(
        update(PortalLink)
        .where(
            col(PortalLink.token_hash) == token_hash,
            col(PortalLink.used_at).is_(None),
            col(PortalLink.expires_at) > now,
        )
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.exec(
        select(Tenant)
        .join(PortalLink, col(PortalLink.tenant_id) == col(Tenant.id))
        .where(PortalLink.token_hash == token_hash)
    ).first()

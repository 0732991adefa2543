"""Portal links: an admin hands a customer a single-use, expiring link to their portal."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlmodel import Session

from billing.audit import service as audit
from billing.audit.schemas import Actor
from billing.models import PortalLink, Tenant
from billing.models.types import utcnow
from billing.tenants.service import require_tenant
from gateway.console.portal_links import repository
from gateway.console.sessions.service import hash_token, new_token
from gateway.errors import InvalidRequest

# The token follows "#": a fragment is never sent in a request, so no access log, proxy or
# Referer header sees it; the page's script posts it (gateway/console/signin.py).
OPEN_PATH = "/console/portal/open"


class PortalLinkPublic(BaseModel):
    """A new link; its URL is in this answer only (the ledger keeps the token's hash)."""

    tenant: str
    url: str
    expires_at: datetime


class PortalLinkCreate(BaseModel):
    """A shorter lifetime than ``GATEWAY_CONSOLE_PORTAL_LINK_SECONDS``, if wanted."""

    expires_in_seconds: int | None = Field(default=None, gt=0)


class PortalLinkRecord(BaseModel):
    """What the audit log keeps of a link: never its token."""

    tenant: str
    expires_at: datetime


def portal_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{OPEN_PATH}#{token}"


def portal_link_lifetime(requested_seconds: int | None, max_seconds: int) -> timedelta:
    """The lifetime asked for, or the longest allowed when none was; ``InvalidRequest`` past
    the longest allowed."""
    if requested_seconds is not None and requested_seconds > max_seconds:
        raise InvalidRequest(
            f"A portal link lives at most {max_seconds} seconds "
            "(GATEWAY_CONSOLE_PORTAL_LINK_SECONDS).",
            param="expires_in_seconds",
            code="invalid_value",
        )
    return timedelta(seconds=requested_seconds or max_seconds)


def create_portal_link(
    session: Session, tenant_name: str, *, base_url: str, ttl: timedelta, actor: Actor
) -> PortalLinkPublic:
    tenant = require_tenant(session, tenant_name)
    assert tenant.id is not None
    token = new_token()
    link = repository.add_link(
        session,
        PortalLink(
            token_hash=hash_token(token),
            tenant_id=tenant.id,
            created_by=actor.name,
            expires_at=utcnow() + ttl,
        ),
    )
    audit.record(
        session,
        actor,
        "portal_link.create",
        "tenant",
        tenant.name,
        after=PortalLinkRecord(tenant=tenant.name, expires_at=link.expires_at),
    )
    return PortalLinkPublic(
        tenant=tenant.name, url=portal_url(base_url, token), expires_at=link.expires_at
    )


def redeem_portal_link(session: Session, token: str) -> Tenant | None:
    """The link's tenant, once: None when the link is unknown, used or expired."""
    return repository.claim_link(session, hash_token(token), utcnow())

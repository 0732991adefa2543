"""Who a console request comes from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from billing.audit.schemas import Actor
from gateway.admin.auth import AdminClaims, Scope


@dataclass(frozen=True)
class ConsoleCaller:
    """An open console session: an admin with scopes, or a customer of one tenant."""

    session_id: int
    kind: Literal["admin", "portal"]
    subject: str
    scopes: frozenset[Scope]
    tenant_id: int | None
    tenant_name: str | None
    csrf_token: str
    expires_at: datetime
    # When the caller last proved who they are: sign-in, or the last step-up.
    authenticated_at: datetime | None = None
    admin_user_id: int | None = None

    def claims(self) -> AdminClaims:
        """The admin API's view of this caller, for the services the two share."""
        return AdminClaims(subject=self.subject, scopes=self.scopes, expires_at=self.expires_at)

    def actor(self, request_id: str | None = None) -> Actor:
        """Who the audit log names: the admin, or ``portal:<tenant>`` for a customer."""
        name = self.subject if self.kind == "admin" else f"portal:{self.tenant_name}"
        return Actor(name=name, request_id=request_id)


class OwnSession(BaseModel):
    """One of the signed-in user's sessions, as their sessions page lists it."""

    id: int
    created_at: datetime
    last_seen_at: datetime
    client_ip: str | None
    user_agent: str | None
    current: bool


class ConsoleSessionPublic(BaseModel):
    """A session as ``asrgw admin session list`` shows it (never its token)."""

    id: int
    kind: str
    subject: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    client_ip: str | None

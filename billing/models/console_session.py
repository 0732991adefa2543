from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Column, ForeignKey, Integer, String
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class ConsoleSession(SQLModel, table=True):
    """A signed-in browser of the web console: an admin, or a customer scoped to one tenant.

    The cookie holds an opaque random id; only its SHA-256 is stored, so a leaked table opens no
    session. A session ends at ``expires_at`` (absolute), after ``last_seen_at`` plus the idle
    limit, or when ``revoked_at`` is set (sign-out, ``asrgw admin session revoke``), on every
    replica at once since each request reads this row.
    """

    __tablename__ = "console_sessions"
    __table_args__ = (
        CheckConstraint("kind IN ('admin', 'portal')", name="kind"),
        CheckConstraint("(kind = 'portal') = (tenant_id IS NOT NULL)", name="portal_has_tenant"),
    )

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    kind: str = Field(sa_column=Column(String(8), nullable=False))
    # The username, the SSO token's subject, or the tenant's name for a portal session.
    subject: str = Field(sa_column=Column(String(200), nullable=False))
    admin_user_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("admin_users.id", ondelete="CASCADE"), nullable=True, index=True
        ),
    )
    tenant_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True, index=True
        ),
    )
    # Admin scopes granted by an SSO token at sign-in; a password user's come from their role.
    scopes: str = Field(default="", sa_column=Column(String(400), nullable=False))
    # The synchronizer token every state-changing request of this session must carry.
    csrf_token: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    last_seen_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    client_ip: str | None = Field(default=None, sa_column=Column(String(64)))
    # The browser's User-Agent (cut to the column), shown in the user's list of their sessions.
    user_agent: str | None = Field(default=None, sa_column=Column(String(300)))
    # When the user last proved who they are again (password, fresh SSO token) for an action
    # that asks it; None: only at sign-in (``created_at``).
    reauthenticated_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

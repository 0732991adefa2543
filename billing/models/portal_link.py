from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class PortalLink(SQLModel, table=True):
    """A single-use link that opens a customer portal session for one tenant. Only the token's
    SHA-256 is stored; ``used_at`` is set by the one request that redeems it."""

    __tablename__ = "portal_links"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    tenant_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    created_by: str = Field(sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

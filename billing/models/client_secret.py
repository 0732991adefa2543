from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class ClientSecret(SQLModel, table=True):
    """A short-lived client token: a browser opens one streaming WebSocket with it instead of
    its API key. Only the token's SHA-256 is stored; ``used_at`` is set by the one connection
    that presents it, and the row goes when its key does."""

    __tablename__ = "client_secrets"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    api_key_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

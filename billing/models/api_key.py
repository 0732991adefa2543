from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String, Text
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class ApiKey(SQLModel, table=True):
    """A customer API key. The secret itself is never stored: only its SHA-256 and a prefix
    that finds the row without scanning."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    name: str = Field(sa_column=Column(String(128), nullable=False))
    prefix: str = Field(sa_column=Column(String(16), nullable=False, unique=True))
    secret_hash: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # Space-separated customer scopes (billing.keys.schemas.KeyScope); None allows every scope.
    scopes: str | None = Field(default=None, sa_column=Column(String(200)))
    # Comma-separated model names this key may use; None allows every model.
    allowed_models: str | None = Field(default=None, sa_column=Column(Text))
    # The key this one replaced in a rotation.
    rotated_from_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("api_keys.id", ondelete="RESTRICT")),
    )

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String, Text
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class IdempotencyRecord(SQLModel, table=True):
    """The response to a request sent with an ``Idempotency-Key``: a retry with the same key
    gets this response back and is billed nothing more."""

    __tablename__ = "idempotency_records"

    tenant_id: int = Field(
        sa_column=Column(Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True)
    )
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    # MD5 of the audio and every parameter: the same key with another request is refused.
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False))
    state: str = Field(default="in_progress", sa_column=Column(String(16), nullable=False))
    request_id: str = Field(sa_column=Column(String(64), nullable=False))
    status_code: int | None = Field(default=None, sa_column=Column(Integer))
    media_type: str | None = Field(default=None, sa_column=Column(String(100)))
    headers: str | None = Field(default=None, sa_column=Column(Text))  # JSON object
    body: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

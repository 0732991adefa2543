from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String, Text
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class IdempotencyRecord(SQLModel, table=True):
    """One ``Idempotency-Key`` of a tenant: the request it belongs to, who is working it, and
    the result it settled with.

    ``request_id`` is fixed when the key is first claimed: every attempt of the key runs under
    it, so the key has one reservation and at most one usage row, ever. While ``in_progress``
    the key is leased (``lease_token`` until ``lease_expires_at``, renewed while the attempt
    runs); a retry finding the lease expired takes it over. The settlement that writes the
    usage row marks the record ``completed`` and stores the canonical ``result`` in the same
    transaction, so a completed key is replayed from the ledger and never freed.

    ``status_code``, ``media_type``, ``headers`` and ``body`` hold responses recorded before
    results were stored (revision 0008); those are replayed byte for byte.
    """

    __tablename__ = "idempotency_records"

    tenant_id: int = Field(
        sa_column=Column(Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True)
    )
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    # SHA-256 over the audio's MD5, the route and every transcript-changing parameter: the
    # same key with another request is refused.
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False))
    state: str = Field(default="in_progress", sa_column=Column(String(16), nullable=False))
    request_id: str = Field(sa_column=Column(String(64), nullable=False))
    lease_token: str | None = Field(default=None, sa_column=Column(String(32)))
    lease_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    result: str | None = Field(default=None, sa_column=Column(Text))  # canonical result, JSON
    completed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    status_code: int | None = Field(default=None, sa_column=Column(Integer))
    media_type: str | None = Field(default=None, sa_column=Column(String(100)))
    headers: str | None = Field(default=None, sa_column=Column(Text))  # JSON object
    body: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )

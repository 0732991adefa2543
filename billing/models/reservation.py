from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Integer, String
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class Reservation(SQLModel, table=True):
    """The worst-case cost of one request, held from before dispatch until it is settled
    (success) or released (failure, or expiry after a crashed gateway)."""

    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint("state IN ('open', 'settled', 'released')", name="state"),
        CheckConstraint("amount_micros >= 0 AND tokens >= 0", name="nonnegative"),
    )

    request_id: str = Field(sa_column=Column(String(64), primary_key=True))
    tenant_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    api_key_id: int = Field(
        sa_column=Column(Integer, ForeignKey("api_keys.id", ondelete="RESTRICT"), nullable=False)
    )
    period: str = Field(sa_column=Column(String(7), nullable=False))
    amount_micros: int = Field(sa_column=Column(BigInteger, nullable=False))
    tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: str = Field(default="open", sa_column=Column(String(16), nullable=False, index=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    closed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

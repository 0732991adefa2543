from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from billing.models.types import BigIntPK, UTCDateTime, utcnow


class CreditEntry(SQLModel, table=True):
    """Prepaid credit: a top-up (positive) or an adjustment (either sign). Insert-only; the
    client-supplied idempotency key makes a repeated top-up a no-op."""

    __tablename__ = "credit_entries"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_credit_entries_idempotency"),
        CheckConstraint("kind IN ('topup', 'adjustment')", name="kind"),
        CheckConstraint("kind <> 'topup' OR amount_micros > 0", name="topup_positive"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    tenant_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    amount_micros: int = Field(sa_column=Column(BigInteger, nullable=False))
    idempotency_key: str = Field(sa_column=Column(String(128), nullable=False))
    note: str = Field(default="", sa_column=Column(String(500), nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

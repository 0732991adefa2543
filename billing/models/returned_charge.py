from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, String
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class ReturnedCharge(SQLModel, table=True):
    """What the gateway told the client a request cost, written after the response was built,
    apart from the ledger row: reconciliation compares the two."""

    __tablename__ = "returned_charges"

    request_id: str = Field(sa_column=Column(String(64), primary_key=True))
    tenant_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    billed_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    cost_micros: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

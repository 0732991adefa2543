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

from billing.models.types import UTCDateTime, utcnow


class Invoice(SQLModel, table=True):
    """A tenant's bill for one calendar month (UTC). A draft is rebuilt from the ledger on
    demand; once finalized it never changes again."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("tenant_id", "period", name="uq_invoices_tenant_period"),
        CheckConstraint("state IN ('draft', 'finalized')", name="state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(
        sa_column=Column(Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False)
    )
    period: str = Field(sa_column=Column(String(7), nullable=False))
    state: str = Field(default="draft", sa_column=Column(String(16), nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    total_micros: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    finalized_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class InvoiceLine(SQLModel, table=True):
    """Usage of one model through one key on an invoice; ``adjustment`` lines carry usage dated
    in an earlier, already finalized month."""

    __tablename__ = "invoice_lines"
    __table_args__ = (CheckConstraint("kind IN ('usage', 'adjustment')", name="kind"),)

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    model: str = Field(sa_column=Column(String(128), nullable=False))
    api_key_prefix: str = Field(sa_column=Column(String(16), nullable=False))
    requests: int = Field(sa_column=Column(BigInteger, nullable=False))
    billed_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    amount_micros: int = Field(sa_column=Column(BigInteger, nullable=False))


class InvoiceItem(SQLModel, table=True):
    """Which invoice a usage row is billed on: each row on exactly one invoice."""

    __tablename__ = "invoice_items"

    usage_event_id: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey("usage_events.id", ondelete="RESTRICT"), primary_key=True
        )
    )
    invoice_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )

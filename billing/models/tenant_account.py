from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Integer
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class TenantAccount(SQLModel, table=True):
    """A tenant's running money totals, and the row every reservation locks.

    Derived state, kept in step with the insert-only tables in the same transactions:
    ``credit_micros`` = sum of credit entries, ``spent_micros`` = sum of usage costs,
    ``reserved_micros`` = sum of open reservations. Reconciliation recomputes all three.
    """

    __tablename__ = "tenant_accounts"
    __table_args__ = (
        CheckConstraint("spent_micros >= 0 AND reserved_micros >= 0", name="nonnegative"),
    )

    tenant_id: int = Field(
        sa_column=Column(Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True)
    )
    credit_micros: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    spent_micros: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    reserved_micros: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

    @property
    def available_micros(self) -> int:
        return self.credit_micros - self.spent_micros - self.reserved_micros

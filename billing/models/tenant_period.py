from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, String
from sqlmodel import Field, SQLModel


class TenantPeriod(SQLModel, table=True):
    """Output tokens of one tenant in one calendar month (UTC), for the plan's quota.

    Derived state like ``TenantAccount``: ``tokens_used`` = billed tokens of the month's usage
    rows, ``tokens_reserved`` = tokens held by open reservations of the month.
    """

    __tablename__ = "tenant_periods"

    tenant_id: int = Field(
        sa_column=Column(Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True)
    )
    period: str = Field(sa_column=Column(String(7), primary_key=True))  # "2026-11"
    tokens_used: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    tokens_reserved: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))

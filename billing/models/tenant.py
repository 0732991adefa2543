from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Column, ForeignKey, Integer, String, false
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class Tenant(SQLModel, table=True):
    """A customer account: owns API keys, is billed on one plan."""

    __tablename__ = "tenants"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(128), nullable=False, unique=True))
    plan_id: int = Field(
        sa_column=Column(Integer, ForeignKey("plans.id", ondelete="RESTRICT"), nullable=False)
    )
    # Prepaid tenants spend credit and get 402 when it runs out; others are billed afterwards.
    prepaid: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

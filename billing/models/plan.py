from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, String
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class Plan(SQLModel, table=True):
    """What a tenant pays per 1,000 output tokens, and how tokens are counted."""

    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("price_per_1k_tokens_micros >= 0", name="price_nonnegative"),
        CheckConstraint("token_unit IN ('char', 'word')", name="token_unit"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    currency: str = Field(default="USD", sa_column=Column(String(3), nullable=False))
    price_per_1k_tokens_micros: int = Field(sa_column=Column(BigInteger, nullable=False))
    token_unit: str = Field(default="char", sa_column=Column(String(8), nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

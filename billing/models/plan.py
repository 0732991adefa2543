from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, Integer, String, text
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class Plan(SQLModel, table=True):
    """What a tenant pays per 1,000 output tokens, and how tokens are counted."""

    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("price_per_1k_tokens_micros >= 0", name="price_nonnegative"),
        CheckConstraint("token_unit IN ('char', 'word')", name="token_unit"),
        CheckConstraint("max_tokens_per_audio_second > 0", name="token_bound_positive"),
        CheckConstraint("cache_hit_price_bp BETWEEN 0 AND 10000", name="cache_hit_price_bp"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    currency: str = Field(default="USD", sa_column=Column(String(3), nullable=False))
    price_per_1k_tokens_micros: int = Field(sa_column=Column(BigInteger, nullable=False))
    token_unit: str = Field(default="char", sa_column=Column(String(8), nullable=False))
    # Postpaid limit: output tokens per calendar month (UTC); None is unlimited.
    monthly_token_quota: int | None = Field(default=None, sa_column=Column(BigInteger))
    # Enforced by the gateway's rate limiter; None is unlimited.
    requests_per_minute: int | None = Field(default=None, sa_column=Column(Integer))
    concurrency_limit: int | None = Field(default=None, sa_column=Column(Integer))
    # Reservation bound, and the most a request is ever billed: audio seconds x this many tokens.
    max_tokens_per_audio_second: int = Field(
        default=50, sa_column=Column(Integer, nullable=False, server_default=text("50"))
    )
    # Price of a cache hit, in basis points of the normal price (0 = free, 10000 = full).
    cache_hit_price_bp: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

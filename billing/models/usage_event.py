from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    String,
    false,
)
from sqlmodel import Field, SQLModel

from billing.models.types import BigIntPK, UTCDateTime, utcnow


class UsageEvent(SQLModel, table=True):
    """One billed transcription. Insert-only: corrections are new rows, never updates.

    The plan's price and unit are copied onto the row, so a later price change never rewrites
    what a past request cost. Audio length is kept in integer milliseconds.
    """

    __tablename__ = "usage_events"
    __table_args__ = (
        CheckConstraint(
            "audio_ms >= 0 AND output_tokens >= 0 AND billed_tokens >= 0 AND cost_micros >= 0",
            name="nonnegative",
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    request_id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    tenant_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    api_key_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("api_keys.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    model: str = Field(sa_column=Column(String(128), nullable=False))
    audio_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    output_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Tokens charged: output_tokens capped by the plan's bound for the audio's length.
    billed_tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    token_unit: str = Field(sa_column=Column(String(8), nullable=False))
    price_per_1k_tokens_micros: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    cost_micros: int = Field(sa_column=Column(BigInteger, nullable=False))
    cached: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False, index=True)
    )

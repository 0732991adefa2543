from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Column, ForeignKey, Integer, String, Text
from sqlmodel import Field, SQLModel

from billing.models.types import BigIntPK, UTCDateTime, utcnow


class JobWebhookDelivery(SQLModel, table=True):
    """One attempt to deliver a job's webhook: the job's delivery log."""

    __tablename__ = "job_webhook_deliveries"

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    job_id: str = Field(
        sa_column=Column(
            String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    attempt: int = Field(sa_column=Column(Integer, nullable=False))
    event: str = Field(sa_column=Column(String(32), nullable=False))
    url: str = Field(sa_column=Column(String(2048), nullable=False))
    status_code: int | None = Field(default=None, sa_column=Column(Integer))
    succeeded: bool = Field(sa_column=Column(Boolean, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text))
    duration_ms: int = Field(sa_column=Column(Integer, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )

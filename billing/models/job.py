from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class Job(SQLModel, table=True):
    """One asynchronous transcription: the queue entry, its lease, and its outcome.

    The job id is also the request id of its reservation and of its one usage row, so however
    many times it is attempted it is reserved once and billed at most once. A worker owns a
    job while ``lease_expires_at`` is ahead and renews it by heartbeat; a lapsed lease lets any
    replica take the job over (``lease_token`` tells one claim from the next).
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'processing', 'completed', 'failed', 'cancelled')", name="state"
        ),
        CheckConstraint(
            "webhook_state IS NULL OR webhook_state IN ('pending', 'delivered', 'failed')",
            name="webhook_state",
        ),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_idempotency"),
        # The claim: queued jobs by when they may run, and processing jobs by lease expiry.
        Index("ix_jobs_claim", "state", "available_at"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
        Index("ix_jobs_webhook", "webhook_state", "webhook_next_at"),
    )

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    tenant_id: int = Field(
        sa_column=Column(Integer, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False)
    )
    api_key_id: int = Field(
        sa_column=Column(Integer, ForeignKey("api_keys.id", ondelete="RESTRICT"), nullable=False)
    )
    state: str = Field(default="queued", sa_column=Column(String(16), nullable=False))
    # The caller as authenticated at submission (key, tenant, plan terms; never a secret): the
    # job is billed on the terms it was accepted under.
    caller: str = Field(sa_column=Column(Text, nullable=False))
    model: str = Field(sa_column=Column(String(128), nullable=False))
    language: str = Field(sa_column=Column(String(32), nullable=False))
    prompt: str | None = Field(default=None, sa_column=Column(Text))
    response_format: str = Field(sa_column=Column(String(16), nullable=False))
    # Comma-separated timestamp granularities ("word,segment"), "" for none.
    granularities: str = Field(default="", sa_column=Column(String(32), nullable=False))
    filename: str = Field(sa_column=Column(String(255), nullable=False))
    content_type: str = Field(sa_column=Column(String(100), nullable=False))
    # Where the audio is stored until the job ends; None once deleted.
    audio_key: str | None = Field(default=None, sa_column=Column(String(255)))
    audio_md5: str = Field(sa_column=Column(String(32), nullable=False))
    audio_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    audio_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(255)))
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False))

    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    lease_owner: str | None = Field(default=None, sa_column=Column(String(128)))
    lease_token: str | None = Field(default=None, sa_column=Column(String(64)))
    lease_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    heartbeat_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # A queued job is not claimed before this (a retry's backoff).
    available_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    # Not finished by then: failed, and its reservation (held until then) released.
    deadline_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))

    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # The result, usage and webhook secret are erased after the retention period.
    result_purged_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

    result: str | None = Field(default=None, sa_column=Column(Text))  # TranscriptionResult JSON
    usage: str | None = Field(default=None, sa_column=Column(Text))  # UsageCharge JSON
    cached: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    error_code: str | None = Field(default=None, sa_column=Column(String(64)))
    error_message: str | None = Field(default=None, sa_column=Column(Text))

    webhook_url: str | None = Field(default=None, sa_column=Column(String(2048)))
    webhook_secret: str | None = Field(default=None, sa_column=Column(String(255)))
    webhook_state: str | None = Field(default=None, sa_column=Column(String(16)))
    webhook_attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    webhook_next_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

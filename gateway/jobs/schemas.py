"""Shapes of the jobs API, apart from the ``jobs`` table (``billing/models/job.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel

from gateway.formats import ResponseFormat, TimestampGranularity


class JobStatus(StrEnum):
    queued = "queued"
    processing = "processing"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = frozenset({JobStatus.completed, JobStatus.failed, JobStatus.cancelled})


class WebhookStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


@dataclass(frozen=True)
class JobRequest:
    """A validated ``POST /v1/jobs``: the OpenAI transcription parameters plus the webhook."""

    audio: bytes
    filename: str
    content_type: str
    model: str
    language: str
    prompt: str | None
    response_format: ResponseFormat
    granularities: frozenset[TimestampGranularity]
    webhook_url: str | None
    webhook_secret: str | None
    idempotency_key: str | None


class JobError(BaseModel):
    code: str
    message: str


class WebhookDeliveryPublic(BaseModel):
    attempt: int
    event: str
    status_code: int | None
    succeeded: bool
    error: str | None
    duration_ms: int
    created_at: int


class JobWebhook(BaseModel):
    url: str
    status: WebhookStatus | None  # None until the job has finished
    attempts: int
    deliveries: list[WebhookDeliveryPublic] | None = None  # on GET /v1/jobs/{id} only


class JobPublic(BaseModel):
    """A job as the API shows it; times are Unix seconds."""

    id: str
    object: Literal["transcription.job"] = "transcription.job"
    status: JobStatus
    created_at: int
    started_at: int | None
    completed_at: int | None
    model: str
    language: str
    response_format: ResponseFormat
    filename: str
    audio_seconds: float
    progress: float
    attempts: int
    error: JobError | None
    # The transcript in the job's response_format (a JSON object or a string), once completed
    # and until the retention period ends; None in lists.
    result: dict[str, Any] | str | None
    result_expires_at: int | None
    result_expired: bool
    usage: dict[str, Any] | None
    webhook: JobWebhook | None
    # Only in the response that created the job, when the gateway generated the secret.
    webhook_secret: str | None = None


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobPublic]
    has_more: bool
    first_id: str | None
    last_id: str | None

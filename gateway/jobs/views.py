"""A job row as the API shows it, and its result rendered in a response format."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from billing.models import Job, JobWebhookDelivery
from billing.models.types import utcnow
from billing.usage.schemas import UsageCharge
from gateway.billed.responses import usage_body
from gateway.config import GatewaySettings
from gateway.formats import ResponseFormat, TimestampGranularity, render_body
from gateway.jobs.schemas import (
    JobError,
    JobPublic,
    JobStatus,
    JobWebhook,
    WebhookDeliveryPublic,
    WebhookStatus,
)
from inference.protocol import TranscriptionResult


def unix(moment: datetime | None) -> int | None:
    return None if moment is None else math.floor(moment.timestamp())


def granularities_of(job: Job) -> frozenset[TimestampGranularity]:
    return frozenset(TimestampGranularity(value) for value in job.granularities.split(",") if value)


def charge_of(job: Job) -> UsageCharge | None:
    return UsageCharge.model_validate_json(job.usage) if job.usage else None


def result_of(job: Job) -> TranscriptionResult | None:
    return TranscriptionResult.model_validate_json(job.result) if job.result else None


def rendered_result(
    job: Job, response_format: ResponseFormat
) -> tuple[str | dict[str, Any], UsageCharge] | None:
    """The result as the synchronous endpoint would have answered it in ``response_format``;
    None when there is none (not completed, or erased after the retention period)."""
    result, charge = result_of(job), charge_of(job)
    if result is None or charge is None:
        return None
    granularities = (
        set(granularities_of(job)) if response_format is ResponseFormat.verbose_json else set()
    )
    return render_body(result, response_format, granularities, usage_body(charge)), charge


def progress(job: Job, settings: GatewaySettings, now: datetime) -> float:
    """1 when finished, 0 while queued; while processing, the time spent against the time the
    audio is expected to take (nodes do not report progress), never above 0.99."""
    if job.state in (JobStatus.completed.value, JobStatus.failed.value):
        return 1.0
    if job.state != JobStatus.processing.value or job.started_at is None:
        return 0.0
    expected = max(1.0, job.audio_ms / 1000 * settings.job_progress_seconds_per_audio_second)
    elapsed = (now - job.started_at).total_seconds()
    return round(min(0.99, max(0.0, elapsed / expected)), 2)


def public_job(
    job: Job,
    settings: GatewaySettings,
    *,
    with_result: bool = True,
    deliveries: Sequence[JobWebhookDelivery] | None = None,
    now: datetime | None = None,
) -> JobPublic:
    now = now or utcnow()
    response_format = ResponseFormat(job.response_format)
    rendered = rendered_result(job, response_format) if with_result else None
    charge = charge_of(job)
    retention = timedelta(seconds=settings.job_result_retention_seconds)
    result_expires_at = None
    if job.state == JobStatus.completed.value and job.finished_at is not None:
        result_expires_at = unix(job.finished_at + retention)
    webhook = None
    if job.webhook_url:
        webhook = JobWebhook(
            url=job.webhook_url,
            status=WebhookStatus(job.webhook_state) if job.webhook_state else None,
            attempts=job.webhook_attempts,
            deliveries=None if deliveries is None else [public_delivery(d) for d in deliveries],
        )
    return JobPublic(
        id=job.id,
        status=JobStatus(job.state),
        created_at=math.floor(job.created_at.timestamp()),
        started_at=unix(job.started_at),
        completed_at=unix(job.finished_at),
        model=job.model,
        language=job.language,
        response_format=response_format,
        filename=job.filename,
        audio_seconds=job.audio_ms / 1000,
        progress=progress(job, settings, now),
        attempts=job.attempts,
        error=JobError(code=job.error_code, message=job.error_message or "")
        if job.error_code
        else None,
        result=rendered[0] if rendered is not None else None,
        result_expires_at=result_expires_at,
        result_expired=job.result_purged_at is not None,
        usage=usage_body(charge) if charge is not None else None,
        webhook=webhook,
    )


def public_delivery(delivery: JobWebhookDelivery) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(
        attempt=delivery.attempt,
        event=delivery.event,
        status_code=delivery.status_code,
        succeeded=delivery.succeeded,
        error=delivery.error,
        duration_ms=delivery.duration_ms,
        created_at=math.floor(delivery.created_at.timestamp()),
    )

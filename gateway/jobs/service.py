"""Submitting, reading, listing and cancelling jobs: what the endpoints call.

Submission measures the audio (400 for anything but accepted audio, 413 past
``GATEWAY_JOB_MAX_AUDIO_SECONDS``, before anything is stored or queued), stores it, then inserts
the job and reserves its worst-case cost in one transaction: 402 when the quota or credit cannot
cover it, exactly as a synchronous call, and never a job without its reservation or the reverse.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import anyio
from sqlalchemy.exc import IntegrityError

from billing.db import Database
from billing.errors import InsufficientQuota
from billing.keys.schemas import AuthenticatedKey
from billing.models import Job
from billing.models.types import utcnow
from billing.reservations import service as reservations
from gateway import metrics
from gateway.audio_probe import LengthLimit, probe_audio_ms
from gateway.billed.idempotency import fingerprint_md5
from gateway.cache.keys import audio_md5_digest
from gateway.config import GatewaySettings
from gateway.errors import (
    IdempotencyConflict,
    InvalidRequest,
    NotFoundError,
    QuotaExceeded,
)
from gateway.jobs import lifecycle, repository
from gateway.jobs.schemas import JobList, JobPublic, JobRequest, JobStatus
from gateway.jobs.storage import AudioStore
from gateway.jobs.views import public_job
from gateway.jobs.webhooks.signing import new_secret
from gateway.jobs.webhooks.targets import TargetPolicy, resolve
from gateway.transcriptions.service import refuse_disallowed_model

logger = logging.getLogger(__name__)

MAX_PAGE = 100


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


async def submit_job(
    caller: AuthenticatedKey,
    request: JobRequest,
    *,
    database: Database,
    store: AudioStore,
    settings: GatewaySettings,
) -> tuple[JobPublic, bool]:
    """The new job (queued, its cost reserved), and True; or, for an ``Idempotency-Key`` seen
    before with the same request, that job and False."""
    refuse_disallowed_model(caller, request.model)
    audio_ms = await probe_audio_ms(
        request.audio, LengthLimit(settings.job_max_audio_seconds, "jobs")
    )
    if request.webhook_url:
        policy = TargetPolicy.from_settings(settings)
        await anyio.to_thread.run_sync(lambda: resolve(request.webhook_url or "", policy))
    # Hashed once, beside the event loop: a job's upload can be hundreds of megabytes.
    audio_digest = await audio_md5_digest(request.audio)
    request_fingerprint = fingerprint_md5(
        audio_digest,
        {
            "model": request.model,
            "language": request.language,
            "prompt": request.prompt,
            "response_format": request.response_format.value,
            "granularities": sorted(request.granularities),
            "webhook_url": request.webhook_url,
        },
    )
    if request.idempotency_key:
        existing = await anyio.to_thread.run_sync(
            _existing, database, caller, request.idempotency_key, request_fingerprint, settings
        )
        if existing is not None:
            return existing, False
    generated_secret = new_secret() if request.webhook_url and not request.webhook_secret else None
    now = utcnow()
    job = Job(
        id=new_job_id(),
        tenant_id=caller.tenant_id,
        api_key_id=caller.key_id,
        state=JobStatus.queued.value,
        caller=caller.model_dump_json(),
        model=request.model,
        language=request.language,
        prompt=request.prompt,
        response_format=request.response_format.value,
        granularities=",".join(sorted(request.granularities)),
        filename=request.filename[:255],
        content_type=request.content_type[:100],
        audio_md5=audio_digest.hex(),
        audio_bytes=len(request.audio),
        audio_ms=audio_ms,
        idempotency_key=request.idempotency_key,
        fingerprint=request_fingerprint,
        available_at=now,
        deadline_at=now + timedelta(seconds=settings.job_deadline_seconds),
        created_at=now,
        webhook_url=request.webhook_url,
        webhook_secret=request.webhook_secret or generated_secret,
    )
    job.audio_key = job.id
    await anyio.to_thread.run_sync(store.put, job.id, request.audio)
    try:
        await anyio.to_thread.run_sync(_queue, database, job, caller, settings)
    except BaseException as error:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(store.delete, job.id)
        if isinstance(error, IntegrityError) and request.idempotency_key:
            # A concurrent request with the same key got there first.
            existing = await anyio.to_thread.run_sync(
                _existing, database, caller, request.idempotency_key, request_fingerprint, settings
            )
            if existing is not None:
                return existing, False
        raise
    public = public_job(job, settings)
    public.webhook_secret = generated_secret
    return public, True


def _queue(
    database: Database, job: Job, caller: AuthenticatedKey, settings: GatewaySettings
) -> None:
    # The reservation is held until the job's deadline (it ends before then, one way or the
    # other), plus the margin after which the sweeper may free it.
    ttl = timedelta(seconds=settings.job_deadline_seconds + settings.reservation_margin_seconds)
    try:
        with database.transaction() as session:
            repository.add(session, job)
            reservations.reserve(session, job.id, caller, job.audio_ms, ttl=ttl, now=job.created_at)
    except InsufficientQuota as error:
        metrics.QUOTA_REJECTIONS.inc()
        raise QuotaExceeded(error.message) from None


def _existing(
    database: Database,
    caller: AuthenticatedKey,
    key: str,
    request_fingerprint: str,
    settings: GatewaySettings,
) -> JobPublic | None:
    with database.transaction() as session:
        job = repository.find_by_idempotency_key(session, caller.tenant_id, key)
    if job is None:
        return None
    if job.fingerprint != request_fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was used with a different request; use a new key.",
            param="Idempotency-Key",
        )
    return public_job(job, settings)


def get_job(database: Database, tenant_id: int, job_id: str) -> Job:
    """The tenant's job ``job_id``; 404 for another tenant's, exactly as for none."""
    with database.transaction() as session:
        job = repository.get_for_tenant(session, tenant_id, job_id)
    if job is None:
        raise NotFoundError(f"No job found with id '{job_id}'.", param="job_id")
    return job


def job_view(
    database: Database, tenant_id: int, job_id: str, settings: GatewaySettings
) -> JobPublic:
    with database.transaction() as session:
        job = repository.get_for_tenant(session, tenant_id, job_id)
        if job is None:
            raise NotFoundError(f"No job found with id '{job_id}'.", param="job_id")
        deliveries = repository.deliveries(session, job_id) if job.webhook_url else None
    return public_job(job, settings, deliveries=deliveries)


def list_jobs(
    database: Database,
    tenant_id: int,
    settings: GatewaySettings,
    *,
    limit: int,
    after: str | None,
    status: JobStatus | None,
) -> JobList:
    with database.transaction() as session:
        cursor = None
        if after is not None:
            cursor = repository.get_for_tenant(session, tenant_id, after)
            if cursor is None:
                raise InvalidRequest(f"No job found with id '{after}'.", param="after")
        jobs = list(
            repository.page_for_tenant(
                session, tenant_id, limit=limit + 1, after=cursor, status=status
            )
        )
    page = jobs[:limit]
    return JobList(
        data=[public_job(job, settings, with_result=False) for job in page],
        has_more=len(jobs) > limit,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
    )


async def cancel_job(
    database: Database,
    store: AudioStore,
    tenant_id: int,
    job_id: str,
    settings: GatewaySettings,
) -> JobPublic:
    job = await anyio.to_thread.run_sync(lifecycle.cancel, database, tenant_id, job_id)
    if job is None:
        raise NotFoundError(f"No job found with id '{job_id}'.", param="job_id")
    if job.audio_key is not None:
        key = job.audio_key
        try:
            await anyio.to_thread.run_sync(store.delete, key)
            await anyio.to_thread.run_sync(lifecycle.forget_audio, database, job_id, key)
            job.audio_key = None
        except Exception:
            logger.exception("could not delete the audio of job %s", job_id)
    return public_job(job, settings)

"""Every query of the jobs and their webhook deliveries.

Rows a worker changes are read ``FOR UPDATE`` (on SQLite the transaction's BEGIN IMMEDIATE
holds the database's write lock already), so a job's transitions are serialized. A job row is
always locked before its tenant's account (which settling or releasing its reservation locks):
one order everywhere, so the two never deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, func, or_
from sqlmodel import Session, col, select

from billing.models import Job, JobWebhookDelivery
from gateway.jobs.schemas import FINISHED, JobStatus, WebhookStatus

ENDED_STATES = [state.value for state in FINISHED]


def add(session: Session, job: Job) -> None:
    session.add(job)
    session.flush()


def get(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def get_for_tenant(session: Session, tenant_id: int, job_id: str) -> Job | None:
    statement = select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id)
    return session.exec(statement).first()


def find_by_idempotency_key(session: Session, tenant_id: int, key: str) -> Job | None:
    statement = select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
    return session.exec(statement).first()


def lock(session: Session, job_id: str) -> Job | None:
    """The job, locked for this transaction and read fresh."""
    statement = (
        select(Job)
        .where(Job.id == job_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.exec(statement).first()


def page_for_tenant(
    session: Session,
    tenant_id: int,
    *,
    limit: int,
    after: Job | None = None,
    status: JobStatus | None = None,
) -> Sequence[Job]:
    """Newest first; ``after`` continues below that job."""
    statement = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        statement = statement.where(Job.state == status.value)
    if after is not None:
        statement = statement.where(
            or_(
                col(Job.created_at) < after.created_at,
                and_(col(Job.created_at) == after.created_at, col(Job.id) < after.id),
            )
        )
    statement = statement.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(limit)
    return session.exec(statement).all()


def lock_next_claimable(session: Session, now: datetime) -> Job | None:
    """The next job a worker may take, locked: a queued one whose time has come, or one being
    processed whose lease has lapsed (its worker died). SKIP LOCKED lets concurrent workers of
    every replica each lock a different job without waiting on one another."""
    claimable = or_(
        and_(col(Job.state) == JobStatus.queued.value, col(Job.available_at) <= now),
        and_(col(Job.state) == JobStatus.processing.value, col(Job.lease_expires_at) < now),
    )
    statement = (
        select(Job)
        .where(claimable)
        .order_by(col(Job.available_at))
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return session.exec(statement).first()


def renew_lease(session: Session, job_id: str, token: str, now: datetime, until: datetime) -> bool:
    """Extend the lease of claim ``token``; False when the job is no longer that claim's (it was
    cancelled, or taken over after the lease lapsed)."""
    job = lock(session, job_id)
    if job is None or job.state != JobStatus.processing.value or job.lease_token != token:
        return False
    job.lease_expires_at = until
    job.heartbeat_at = now
    session.flush()
    return True


def lock_overdue(session: Session, now: datetime, limit: int = 100) -> Sequence[Job]:
    """Unfinished jobs past their deadline that no live worker holds."""
    statement = (
        select(Job)
        .where(
            col(Job.deadline_at) < now,
            or_(
                col(Job.state) == JobStatus.queued.value,
                and_(col(Job.state) == JobStatus.processing.value, col(Job.lease_expires_at) < now),
            ),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return session.exec(statement).all()


def lock_expired_results(
    session: Session, finished_before: datetime, limit: int = 500
) -> Sequence[Job]:
    statement = (
        select(Job)
        .where(
            col(Job.state).in_(ENDED_STATES),
            col(Job.finished_at) < finished_before,
            col(Job.result_purged_at).is_(None),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return session.exec(statement).all()


def ended_with_audio(session: Session, limit: int = 500) -> Sequence[tuple[str, str]]:
    """(job id, audio key) of finished jobs whose audio is still stored."""
    statement = (
        select(Job.id, Job.audio_key)
        .where(col(Job.state).in_(ENDED_STATES), col(Job.audio_key).is_not(None))
        .limit(limit)
    )
    return [(job_id, key) for job_id, key in session.exec(statement).all() if key is not None]


def clear_audio_key(session: Session, job_id: str, key: str) -> None:
    job = lock(session, job_id)
    if job is not None and job.audio_key == key:
        job.audio_key = None
        session.flush()


def unfinished_ids(session: Session, job_ids: Sequence[str]) -> set[str]:
    """Which of ``job_ids`` exist and have not ended (their audio is still needed)."""
    if not job_ids:
        return set()
    statement = select(Job.id).where(
        col(Job.id).in_(list(job_ids)), col(Job.state).not_in(ENDED_STATES)
    )
    return set(session.exec(statement).all())


def tenants_with_webhooks_due(session: Session, now: datetime, limit: int = 100) -> list[int]:
    """Up to ``limit`` tenants with a webhook due, the one waiting longest first."""
    statement = (
        select(Job.tenant_id)
        .where(
            Job.webhook_state == WebhookStatus.pending.value,
            col(Job.webhook_next_at) <= now,
        )
        .group_by(col(Job.tenant_id))
        .order_by(func.min(Job.webhook_next_at))
        .limit(limit)
    )
    return list(session.exec(statement).all())


def lock_next_webhook(session: Session, now: datetime, tenant_id: int) -> Job | None:
    statement = (
        select(Job)
        .where(
            Job.tenant_id == tenant_id,
            Job.webhook_state == WebhookStatus.pending.value,
            col(Job.webhook_next_at) <= now,
        )
        .order_by(col(Job.webhook_next_at))
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return session.exec(statement).first()


def add_delivery(session: Session, delivery: JobWebhookDelivery) -> None:
    session.add(delivery)
    session.flush()


def deliveries(session: Session, job_id: str) -> Sequence[JobWebhookDelivery]:
    statement = (
        select(JobWebhookDelivery)
        .where(JobWebhookDelivery.job_id == job_id)
        .order_by(col(JobWebhookDelivery.id))
    )
    return session.exec(statement).all()

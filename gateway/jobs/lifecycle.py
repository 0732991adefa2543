"""A job's transitions, each one transaction (blocking: callers run them on worker threads).

```
submit ──▶ queued ──claim──▶ processing ──complete──▶ completed   (settle: one usage row)
             ▲  │                │  │ └───fail──────▶ failed      (release)
             │  │                │  └─lease lapses──▶ (claimed again by any replica)
             │  └──cancel──▶ cancelled ◀──cancel──┘                (release)
             └──────requeue (node outage, shutdown)──┘
```

Exactly once: the job id is the request id of the job's one reservation, taken at submission
in the transaction that inserts the job. Completing settles that reservation and marks the job
completed in one transaction, under the job's row lock, and only for the claim that holds the
lease: a crash before that commit leaves the job unbilled and claimable again; after it, the
job is completed and never claimed again. The ledger's unique request id backs this up:
settling the same id twice returns the first charge. Failing or cancelling releases the
reservation in the transaction that ends the job, so a reservation never outlives its job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from billing.db import Database
from billing.keys.schemas import AuthenticatedKey
from billing.models import Job
from billing.models.types import utcnow
from billing.reservations import service as reservations
from billing.reservations.service import Settlement
from billing.usage.returned import record_returned
from billing.usage.schemas import BillableTranscription, UsageCharge
from gateway.jobs import repository
from gateway.jobs.schemas import JobStatus, WebhookStatus
from inference.protocol import TranscriptionResult


@dataclass(frozen=True)
class Claim:
    """One worker's hold on a job: ``token`` identifies this claim among the job's attempts."""

    job: Job
    token: str

    @property
    def caller(self) -> AuthenticatedKey:
        return AuthenticatedKey.model_validate_json(self.job.caller)


def claim_next(
    database: Database,
    owner: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    now: datetime | None = None,
) -> Claim | None:
    """Take the next claimable job for ``owner``; None when there is none. A job found with
    its attempts used up (its workers kept dying) is failed instead."""
    while True:
        now = now or utcnow()
        with database.transaction() as session:
            job = repository.lock_next_claimable(session, now)
            if job is None:
                return None
            if job.attempts >= max_attempts:
                _finish(
                    session,
                    job,
                    JobStatus.failed,
                    now,
                    error=("job_interrupted", _interrupted_message(job.attempts)),
                )
                continue
            token = uuid.uuid4().hex
            job.state = JobStatus.processing.value
            job.attempts += 1
            job.lease_owner = owner
            job.lease_token = token
            job.lease_expires_at = now + timedelta(seconds=lease_seconds)
            job.heartbeat_at = now
            job.started_at = now
            session.flush()
            return Claim(job=job, token=token)


def _interrupted_message(attempts: int) -> str:
    return (
        f"The job was interrupted {attempts} times (the gateway working it stopped); "
        "nothing was billed."
    )


def renew_lease(
    database: Database, claim: Claim, lease_seconds: float, now: datetime | None = None
) -> bool:
    now = now or utcnow()
    with database.transaction() as session:
        return repository.renew_lease(
            session, claim.job.id, claim.token, now, now + timedelta(seconds=lease_seconds)
        )


def complete(
    database: Database,
    claim: Claim,
    billable: BillableTranscription,
    result: TranscriptionResult,
    *,
    now: datetime | None = None,
) -> Settlement | None:
    """Bill the job (its usage row) and store its result with the usage every read of the job
    shows, together; that stored usage is what the client is told (its returned charge). None
    (nothing written) when the claim no longer holds the job."""
    now = now or utcnow()
    with database.transaction() as session:
        job = repository.lock(session, claim.job.id)
        if job is None or not _holds(job, claim):
            return None
        settlement = reservations.settle_request(session, billable, now=now)
        job.result = result.model_dump_json()
        job.usage = settlement.charge.model_dump_json()
        job.cached = billable.cached
        told = UsageCharge.model_validate_json(job.usage)
        record_returned(
            session,
            job.id,
            job.tenant_id,
            billed_tokens=told.billed_tokens,
            cost_micros=told.cost_micros,
            now=now,
        )
        _finish(session, job, JobStatus.completed, now, release=False)
    return settlement


def fail(
    database: Database, claim: Claim, code: str, message: str, now: datetime | None = None
) -> bool:
    """End the job as failed and release its reservation: nothing is billed."""
    now = now or utcnow()
    with database.transaction() as session:
        job = repository.lock(session, claim.job.id)
        if job is None or not _holds(job, claim):
            return False
        _finish(session, job, JobStatus.failed, now, error=(code, message))
        return True


def requeue(
    database: Database,
    claim: Claim,
    delay_seconds: float,
    *,
    count_attempt: bool = True,
    now: datetime | None = None,
) -> bool:
    """Put the job back in the queue, to be claimed after ``delay_seconds``. A shutdown gives
    its attempt back (``count_attempt=False``)."""
    now = now or utcnow()
    with database.transaction() as session:
        job = repository.lock(session, claim.job.id)
        if job is None or not _holds(job, claim):
            return False
        job.state = JobStatus.queued.value
        job.available_at = now + timedelta(seconds=delay_seconds)
        if not count_attempt:
            job.attempts = max(0, job.attempts - 1)
        _clear_lease(job)
        session.flush()
        return True


def cancel(
    database: Database, tenant_id: int, job_id: str, now: datetime | None = None
) -> Job | None:
    """Cancel a queued or processing job (its reservation released, nothing billed; a worker
    on it stops at its next heartbeat). A finished job has its result and audio erased
    instead. None when the tenant has no such job."""
    now = now or utcnow()
    with database.transaction() as session:
        job = repository.lock(session, job_id)
        if job is None or job.tenant_id != tenant_id:
            return None
        if job.state in (JobStatus.queued.value, JobStatus.processing.value):
            _finish(session, job, JobStatus.cancelled, now)
        else:
            erase_result(job, now)
            session.flush()
        return job


def expire_overdue(database: Database, now: datetime | None = None) -> int:
    """Fail every unfinished job past its deadline that no live worker holds."""
    now = now or utcnow()
    with database.transaction() as session:
        overdue = repository.lock_overdue(session, now)
        for job in overdue:
            message = "The job did not finish before its deadline; nothing was billed."
            _finish(session, job, JobStatus.failed, now, error=("job_expired", message))
        return len(overdue)


def purge_results(database: Database, retention_seconds: float, now: datetime | None = None) -> int:
    """Erase the results of jobs that finished longer than the retention period ago."""
    now = now or utcnow()
    with database.transaction() as session:
        jobs = repository.lock_expired_results(session, now - timedelta(seconds=retention_seconds))
        for job in jobs:
            erase_result(job, now)
        session.flush()
        return len(jobs)


def forget_audio(database: Database, job_id: str, key: str) -> None:
    """The job's audio was deleted from the store."""
    with database.transaction() as session:
        repository.clear_audio_key(session, job_id, key)


def erase_result(job: Job, now: datetime) -> None:
    """Forget the transcript (the charge stays: it is what the ledger billed)."""
    if job.result_purged_at is None:
        job.result = None
        job.webhook_secret = None
        job.result_purged_at = now


def _holds(job: Job, claim: Claim) -> bool:
    return job.state == JobStatus.processing.value and job.lease_token == claim.token


def _clear_lease(job: Job) -> None:
    job.lease_owner = None
    job.lease_token = None
    job.lease_expires_at = None


def _finish(
    session: Session,
    job: Job,
    state: JobStatus,
    now: datetime,
    *,
    error: tuple[str, str] | None = None,
    release: bool = True,
) -> None:
    if release:
        reservations.release(session, job.id, now=now)
    job.state = state.value
    job.finished_at = now
    if error is not None:
        job.error_code, job.error_message = error
    else:
        job.error_code = job.error_message = None
    _clear_lease(job)
    # The customer's own cancellation is not announced; completion and failure are.
    if job.webhook_url and state is not JobStatus.cancelled:
        job.webhook_state = WebhookStatus.pending.value
        job.webhook_next_at = now
    session.flush()

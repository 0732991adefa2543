"""Due webhooks: claimed from the jobs table with SKIP LOCKED (any replica may send a job's
webhook, never two at once), signed, POSTed (``sending.py``), and logged per job. A failed
attempt (no 2xx within the deadline; redirects are not followed) is retried after
``min(base * 2^(attempt - 1), max)`` seconds until ``GATEWAY_WEBHOOK_MAX_ATTEMPTS``. Which
tenant's delivery is claimed next is the senders' choice (``senders.py``).

Delivery is at least once: a gateway that dies after the receiver answered but before the
answer was logged sends it again, with the same event id.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from billing.db import Database
from billing.models import JobWebhookDelivery
from billing.models.types import utcnow
from gateway.config import GatewaySettings
from gateway.jobs import repository
from gateway.jobs.schemas import JobStatus, WebhookStatus
from gateway.jobs.views import public_job
from gateway.jobs.webhooks.sending import DeliveryOutcome, post
from gateway.jobs.webhooks.signing import (
    EVENT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)
from gateway.jobs.webhooks.targets import Resolver

logger = logging.getLogger(__name__)

# A claimed delivery is hidden from other replicas this much longer than its deadline.
CLAIM_MARGIN_SECONDS = 30.0
USER_AGENT = "asr-billing-gateway-webhooks/1"


@dataclass(frozen=True)
class DueWebhook:
    job_id: str
    tenant_id: int
    url: str
    secret: str
    attempt: int
    event: str
    data: dict[str, Any]


def backoff_seconds(attempt: int, settings: GatewaySettings) -> float:
    """The wait after failed attempt ``attempt`` (1-based)."""
    return float(
        min(
            settings.webhook_retry_max_seconds,
            settings.webhook_retry_base_seconds * 2 ** (attempt - 1),
        )
    )


def due_tenants(database: Database, now: datetime | None = None) -> list[int]:
    """Tenants with a webhook due, the longest waiting first."""
    with database.transaction() as session:
        return repository.tenants_with_webhooks_due(session, now or utcnow())


def claim_due(
    database: Database,
    settings: GatewaySettings,
    tenants: Sequence[int],
    now: datetime | None = None,
) -> DueWebhook | None:
    """The next due webhook of the first of ``tenants`` that has one another replica has not
    claimed, now claimed: hidden from the others until its deadline has passed."""
    now = now or utcnow()
    with database.transaction() as session:
        job = None
        for tenant_id in tenants:
            job = repository.lock_next_webhook(session, now, tenant_id)
            if job is not None:
                break
        if job is None:
            return None
        job.webhook_attempts += 1
        hold = settings.webhook_timeout_seconds + CLAIM_MARGIN_SECONDS
        job.webhook_next_at = now + timedelta(seconds=hold)
        session.flush()
        completed = job.state == JobStatus.completed.value
        return DueWebhook(
            job_id=job.id,
            tenant_id=job.tenant_id,
            url=job.webhook_url or "",
            secret=job.webhook_secret or "",
            attempt=job.webhook_attempts,
            event="job.completed" if completed else "job.failed",
            data=public_job(job, settings, with_result=False, now=now).model_dump(mode="json"),
        )


def record(
    database: Database,
    settings: GatewaySettings,
    due: DueWebhook,
    outcome: DeliveryOutcome,
    now: datetime | None = None,
) -> None:
    """Log the attempt and decide what comes next: done, another try later, or given up."""
    now = now or utcnow()
    with database.transaction() as session:
        job = repository.lock(session, due.job_id)
        if job is None:
            return
        repository.add_delivery(
            session,
            JobWebhookDelivery(
                job_id=due.job_id,
                attempt=due.attempt,
                event=due.event,
                url=due.url,
                status_code=outcome.status_code,
                succeeded=outcome.succeeded,
                error=outcome.error,
                duration_ms=outcome.duration_ms,
                created_at=now,
            ),
        )
        if outcome.succeeded:
            job.webhook_state, job.webhook_next_at = WebhookStatus.delivered.value, None
        elif due.attempt >= settings.webhook_max_attempts:
            job.webhook_state, job.webhook_next_at = WebhookStatus.failed.value, None
            logger.warning("webhook of job %s failed %d times; giving up", due.job_id, due.attempt)
        else:
            job.webhook_next_at = now + timedelta(seconds=backoff_seconds(due.attempt, settings))
        session.flush()


def payload(due: DueWebhook, timestamp: int) -> bytes:
    event = {
        "id": f"evt_{due.job_id}.{due.event}",
        "type": due.event,
        "timestamp": timestamp,
        "data": due.data,
    }
    return json.dumps(event, separators=(",", ":")).encode()


async def deliver(
    client: httpx.AsyncClient,
    due: DueWebhook,
    settings: GatewaySettings,
    *,
    resolver: Resolver | None = None,
) -> DeliveryOutcome:
    """One signed POST to the job's webhook, to the address that passed the check."""
    timestamp = int(time.time())
    body = payload(due, timestamp)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature(due.secret, body),
        TIMESTAMP_HEADER: str(timestamp),
        EVENT_ID_HEADER: f"evt_{due.job_id}.{due.event}",
        EVENT_HEADER: due.event,
    }
    return await post(client, due.url, body, headers, settings, resolver=resolver)

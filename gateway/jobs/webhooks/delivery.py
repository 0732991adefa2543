"""Sending due webhooks: claimed from the jobs table with SKIP LOCKED (any replica may send a
job's webhook, never two at once), signed, POSTed, and logged per job. A failed attempt (no
2xx within the timeout; redirects are not followed) is retried after
``min(base * 2^(attempt - 1), max)`` seconds until ``GATEWAY_WEBHOOK_MAX_ATTEMPTS``.

Delivery is at least once: a gateway that dies after the receiver answered but before the
answer was logged sends it again, with the same event id.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx

from billing.db import Database
from billing.models import JobWebhookDelivery
from billing.models.types import utcnow
from gateway.config import GatewaySettings
from gateway.jobs import repository
from gateway.jobs.schemas import JobStatus, WebhookStatus
from gateway.jobs.views import public_job
from gateway.jobs.webhooks.signing import (
    EVENT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)
from gateway.jobs.webhooks.targets import TargetPolicy, UnsafeWebhookUrl, resolve

logger = logging.getLogger(__name__)

# Deliveries one gateway process sends at once.
SENDERS = 4
# A claimed delivery is hidden from other replicas this much longer than its timeout.
CLAIM_MARGIN_SECONDS = 30.0
USER_AGENT = "asr-billing-gateway-webhooks/1"


@dataclass(frozen=True)
class DueWebhook:
    job_id: str
    url: str
    secret: str
    attempt: int
    event: str
    data: dict[str, Any]


@dataclass(frozen=True)
class DeliveryOutcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff_seconds(attempt: int, settings: GatewaySettings) -> float:
    """The wait after failed attempt ``attempt`` (1-based)."""
    return float(
        min(
            settings.webhook_retry_max_seconds,
            settings.webhook_retry_base_seconds * 2 ** (attempt - 1),
        )
    )


def claim_due(
    database: Database, settings: GatewaySettings, now: datetime | None = None
) -> DueWebhook | None:
    now = now or utcnow()
    with database.transaction() as session:
        job = repository.lock_next_webhook(session, now)
        if job is None:
            return None
        job.webhook_attempts += 1
        hold = settings.webhook_timeout_seconds + CLAIM_MARGIN_SECONDS
        job.webhook_next_at = now + timedelta(seconds=hold)
        session.flush()
        completed = job.state == JobStatus.completed.value
        return DueWebhook(
            job_id=job.id,
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
    client: httpx.AsyncClient, due: DueWebhook, settings: GatewaySettings
) -> DeliveryOutcome:
    """One signed POST to the job's webhook, to the address that passed the check."""
    started = time.monotonic()

    def elapsed_ms() -> int:
        return round((time.monotonic() - started) * 1000)

    try:
        target = await anyio.to_thread.run_sync(
            lambda: resolve(due.url, TargetPolicy.from_settings(settings))
        )
    except UnsafeWebhookUrl as error:
        return DeliveryOutcome(None, error.message, elapsed_ms())
    timestamp = int(time.time())
    body = payload(due, timestamp)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Host": target.host_header(),
        SIGNATURE_HEADER: signature(due.secret, body),
        TIMESTAMP_HEADER: str(timestamp),
        EVENT_ID_HEADER: f"evt_{due.job_id}.{due.event}",
        EVENT_HEADER: due.event,
    }
    extensions = {"sni_hostname": target.host} if target.url.startswith("https:") else {}
    try:
        response = await client.post(
            target.pinned_url(),
            content=body,
            headers=headers,
            extensions=extensions,
            timeout=settings.webhook_timeout_seconds,
        )
    except httpx.HTTPError as error:
        detail = str(error)
        return DeliveryOutcome(
            None,
            f"{type(error).__name__}: {detail}" if detail else type(error).__name__,
            elapsed_ms(),
        )
    error_text = None if response.is_success else f"HTTP {response.status_code}"
    return DeliveryOutcome(response.status_code, error_text, elapsed_ms())


async def run_webhook_delivery(database: Database, settings: GatewaySettings) -> None:
    """Send due webhooks until cancelled (the app's lifespan runs this)."""
    async with (
        httpx.AsyncClient(
            trust_env=False, follow_redirects=False, proxy=settings.webhook_proxy_url or None
        ) as client,
        anyio.create_task_group() as senders,
    ):
        for _ in range(SENDERS):
            senders.start_soon(_send_due, database, settings, client)


async def _send_due(
    database: Database, settings: GatewaySettings, client: httpx.AsyncClient
) -> None:
    while True:
        try:
            due = await anyio.to_thread.run_sync(claim_due, database, settings)
            if due is None:
                await anyio.sleep(settings.job_poll_seconds)
                continue
            outcome = await deliver(client, due, settings)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(record, database, settings, due, outcome)
        except Exception:
            logger.exception("webhook delivery failed")
            await anyio.sleep(settings.job_poll_seconds)

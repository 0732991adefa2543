"""The webhook senders of one gateway process, shared fairly between tenants.

``GATEWAY_WEBHOOK_SENDERS`` deliveries go out at once, but at most ``PER_TENANT`` of them to
one tenant, and a free sender serves the tenant this process served least recently among those
with a delivery due. A tenant whose endpoint never answers thus holds one sender for one
deadline at a time, and another tenant's delivery waits for a free sender, not behind that
tenant's backlog: with two senders or more, not at all.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterable

import anyio
import httpx

from billing.db import Database
from gateway.config import GatewaySettings
from gateway.jobs.webhooks.delivery import DueWebhook, claim_due, deliver, due_tenants, record
from gateway.jobs.webhooks.sending import build_client

logger = logging.getLogger(__name__)

PER_TENANT = 1


class TenantTurns:
    """Which tenants this process is sending to, and whose turn comes first."""

    def __init__(self, per_tenant: int = PER_TENANT) -> None:
        self.per_tenant = per_tenant
        self.sending: Counter[int] = Counter()
        self.last_served: dict[int, int] = {}
        self._clock = itertools.count(1)

    def order(self, tenants: Iterable[int]) -> list[int]:
        """``tenants`` (the longest waiting first) without those at their limit, the least
        recently served first; ties keep the given order."""
        free = [tenant for tenant in tenants if self.sending[tenant] < self.per_tenant]
        return sorted(free, key=lambda tenant: self.last_served.get(tenant, 0))

    def start(self, tenant: int) -> None:
        self.sending[tenant] += 1
        self.last_served[tenant] = next(self._clock)

    def finish(self, tenant: int) -> None:
        self.sending[tenant] -= 1
        if self.sending[tenant] <= 0:
            del self.sending[tenant]


async def run_webhook_delivery(database: Database, settings: GatewaySettings) -> None:
    """Send due webhooks until cancelled (the app's lifespan runs this)."""
    turns = TenantTurns()
    # One claim at a time, so two senders never both take a tenant's last free place.
    claiming = anyio.Lock()
    async with build_client(settings) as client, anyio.create_task_group() as senders:
        for _ in range(settings.webhook_senders):
            senders.start_soon(_send_due, database, settings, client, turns, claiming)


async def _send_due(
    database: Database,
    settings: GatewaySettings,
    client: httpx.AsyncClient,
    turns: TenantTurns,
    claiming: anyio.Lock,
) -> None:
    while True:
        try:
            async with claiming:
                due = await _claim(database, settings, turns)
            if due is None:
                await anyio.sleep(settings.job_poll_seconds)
                continue
            try:
                outcome = await deliver(client, due, settings)
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(record, database, settings, due, outcome)
            finally:
                turns.finish(due.tenant_id)
        except Exception:
            logger.exception("webhook delivery failed")
            await anyio.sleep(settings.job_poll_seconds)


async def _claim(
    database: Database, settings: GatewaySettings, turns: TenantTurns
) -> DueWebhook | None:
    tenants = turns.order(await anyio.to_thread.run_sync(due_tenants, database))
    if not tenants:
        return None
    due = await anyio.to_thread.run_sync(claim_due, database, settings, tenants)
    if due is not None:
        turns.start(due.tenant_id)
    return due

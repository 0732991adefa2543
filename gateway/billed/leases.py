"""Keeping the reservations and Idempotency-Key leases of running requests alive.

A request's reservation expires ``GATEWAY_REQUEST_LEASE_SECONDS`` after it was taken, and so
does its key's lease: then the sweeper gives the hold back and a retry may take the key over.
One loop per process renews both, every third of the lease, for every request that has run that
long; short requests (nearly all) finish before and cost no renewal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import anyio

from billing.idempotency.service import Lease
from billing.models.types import utcnow
from gateway.ledger import Ledger

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Running:
    request_id: str
    key_lease: Lease | None
    started: float = field(default_factory=time.monotonic)
    # Set when the key's lease turned out to be another attempt's (it lapsed and was taken over).
    lease_lost: bool = False


class LeaseKeeper:
    def __init__(self, ledger: Ledger, lease_seconds: float) -> None:
        self.ledger = ledger
        self.lease_seconds = lease_seconds
        self._running: set[Running] = set()

    @contextmanager
    def keep(self, request_id: str, key_lease: Lease | None) -> Iterator[Running]:
        running = Running(request_id, key_lease)
        self._running.add(running)
        try:
            yield running
        finally:
            self._running.discard(running)

    async def run(self) -> None:
        """Renew until cancelled."""
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            try:
                await self.renew_due()
            except Exception:
                logger.exception("renewing request leases failed")

    async def renew_due(self) -> None:
        """Renew every request running for a third of the lease or longer."""
        started_before = time.monotonic() - self.lease_seconds / 3
        until = utcnow() + timedelta(seconds=self.lease_seconds)
        for running in [r for r in self._running if r.started <= started_before]:
            await self.ledger.renew(running.request_id, until)
            if running.key_lease is None or running.lease_lost:
                continue
            renewed = await self.ledger.renew_key(running.key_lease, until)
            # A request that settled meanwhile completed its key: nothing was lost.
            if not renewed and running in self._running:
                running.lease_lost = True
                logger.warning(
                    "request %s lost its Idempotency-Key lease to a retry", running.request_id
                )

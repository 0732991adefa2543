"""``Idempotency-Key`` on the request path: claim the key's lease, wait a bounded time for an
attempt that holds it, replay a settled one.

A retry that finds a live lease polls with growing pauses (from 50 ms to 1 s), woken at once
when the attempt holding the key runs in this process, and gives up after
``GATEWAY_IDEMPOTENCY_WAIT_SECONDS`` with ``409 idempotency_request_in_progress`` and a
``Retry-After`` of what is left of the lease. One whose lease lapsed takes it over.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from billing.errors import Conflict
from billing.idempotency.service import Busy, Lease, Owned, Settled
from billing.models.types import utcnow
from gateway.errors import IdempotencyConflict, IdempotencyInProgress
from gateway.ledger import Ledger

FIRST_PAUSE_SECONDS = 0.05
LONGEST_PAUSE_SECONDS = 1.0


def fingerprint_md5(md5_digest: bytes, parameters: dict[str, object]) -> str:
    """The request a key stands for: the audio's MD5 and every parameter that changes it."""
    digest = hashlib.sha256(md5_digest)
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def new_lease(tenant_id: int, key: str) -> Lease:
    return Lease(tenant_id=tenant_id, key=key, token=uuid.uuid4().hex)


class KeyClaims:
    """Claims of Idempotency-Keys by this process, and the retries waiting on them."""

    def __init__(self, ledger: Ledger, *, lease_seconds: float, wait_seconds: float) -> None:
        self.ledger = ledger
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self._finished: dict[tuple[int, str], asyncio.Event] = {}

    async def claim(
        self, lease: Lease, request_fingerprint: str, request_id: str
    ) -> Owned | Settled:
        """The key's lease for this attempt (``Owned``), or its settled request (``Settled``);
        ``IdempotencyInProgress`` when another attempt keeps it past the wait."""
        deadline = time.monotonic() + self.wait_seconds
        pause = FIRST_PAUSE_SECONDS
        while True:
            try:
                claim = await self.ledger.claim_key(
                    lease, request_fingerprint, request_id, self.lease_seconds
                )
            except Conflict as error:
                raise IdempotencyConflict(error.message, param="Idempotency-Key") from None
            if not isinstance(claim, Busy):
                return claim
            lease_left = _seconds_until(claim)
            wait_left = deadline - time.monotonic()
            if wait_left <= 0:
                raise IdempotencyInProgress(
                    "A request with this Idempotency-Key is still in progress; retry later.",
                    retry_after_seconds=max(1, math.ceil(min(lease_left, self.lease_seconds))),
                )
            await self._wait_for(lease, min(pause, wait_left, max(lease_left, 0.01)))
            pause = min(pause * 2, LONGEST_PAUSE_SECONDS)

    @contextmanager
    def working(self, lease: Lease) -> Iterator[None]:
        """While this process works the key: retries here wake when it ends."""
        slot = (lease.tenant_id, lease.key)
        event = self._finished.setdefault(slot, asyncio.Event())
        try:
            yield
        finally:
            if self._finished.get(slot) is event:
                del self._finished[slot]
            event.set()

    async def _wait_for(self, lease: Lease, seconds: float) -> None:
        event = self._finished.get((lease.tenant_id, lease.key))
        if event is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass


def _seconds_until(busy: Busy) -> float:
    if busy.lease_expires_at is None:
        return 0.0
    return (busy.lease_expires_at - utcnow()).total_seconds()

"""Admitting a request under its key's plan: requests per minute and requests in flight.

A request first takes a concurrency slot, then counts in the per-minute window, so a request
refused for either reason uses up neither. When the store (Redis) fails, the request is admitted
unlimited or refused with 503, as ``GATEWAY_RATE_LIMIT_ON_STORE_ERROR`` says; never a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import anyio
from redis.asyncio import Redis

from billing.keys.schemas import AuthenticatedKey
from gateway.config import GatewaySettings
from gateway.errors import RateLimited, RateLimiterUnavailable
from gateway.metrics import RATE_LIMITED_REQUESTS, RATE_LIMITER_ERRORS
from gateway.ratelimits.concurrency import ConcurrencySlots, MemorySlots, RedisSlots, Slot
from gateway.ratelimits.headers import openai_duration, rate_limit_headers
from gateway.ratelimits.store import STORE_ERRORS, open_redis, window_storage
from gateway.ratelimits.window import RequestWindow

logger = logging.getLogger(__name__)

StoreErrorPolicy = Literal["open", "closed"]
# Retry-After of a refusal for concurrency: a request in flight usually ends within seconds.
CONCURRENCY_RETRY_AFTER_SECONDS = 1
STORE_RETRY_AFTER_SECONDS = 5


class ThrottledWarning:
    """A warning logged at most once per interval, saying how many were held back meanwhile:
    an outage of the store must not log one line per request."""

    def __init__(
        self, interval_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.next_at = float("-inf")
        self.held_back = 0

    def warn(self, message: str) -> None:
        now = self.clock()
        if now < self.next_at:
            self.held_back += 1
            return
        if self.held_back:
            message += f" ({self.held_back} more since the last report)"
        logger.warning(message)
        self.held_back = 0
        self.next_at = now + self.interval_seconds


@dataclass
class Admission:
    headers: dict[str, str] = field(default_factory=dict)
    slot: Slot | None = None


class RateLimits:
    def __init__(
        self,
        window: RequestWindow,
        slots: ConcurrencySlots,
        *,
        on_store_error: StoreErrorPolicy = "open",
        lease_seconds: float = 30.0,
        redis: Redis | None = None,
    ) -> None:
        self.window = window
        self.slots = slots
        self.on_store_error = on_store_error
        self.lease_seconds = lease_seconds
        self.redis = redis
        self.store_warning = ThrottledWarning()

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> RateLimits:
        redis = open_redis(settings) if settings.redis_url else None
        slots: ConcurrencySlots = (
            RedisSlots(redis, settings.rate_limit_key_prefix, settings.concurrency_lease_seconds)
            if redis is not None
            else MemorySlots()
        )
        return cls(
            RequestWindow(window_storage(settings, redis)),
            slots,
            on_store_error=settings.rate_limit_on_store_error,
            lease_seconds=settings.concurrency_lease_seconds,
            redis=redis,
        )

    async def admit(self, caller: AuthenticatedKey) -> Admission:
        """Admit the caller's request or raise ``RateLimited`` (429)."""
        plan = caller.plan
        admission = Admission()
        if plan.concurrency_limit is not None:
            try:
                admission.slot = await self.slots.acquire(caller.key_id, plan.concurrency_limit)
            except STORE_ERRORS as error:
                self._store_failed("concurrency", error)
                return admission  # the same store keeps the window: do not wait on it twice
            if admission.slot is None:
                await self._refuse_concurrency(caller, plan.concurrency_limit)
        if plan.requests_per_minute is None:
            return admission
        try:
            admission.headers = await self._count_request(caller, plan.requests_per_minute)
        except BaseException:
            await self.release(admission)
            raise
        return admission

    async def release(self, admission: Admission) -> None:
        """Give the slot back; shielded, so a cancelled (disconnected) request still does."""
        if admission.slot is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.slots.release(admission.slot)
            except STORE_ERRORS as error:
                # The lease lapses on its own; nothing to refuse at this point.
                self._count_store_error("concurrency", error)
        admission.slot = None

    async def run_lease_renewal(self) -> None:
        """Keep this replica's concurrency leases alive while their requests run."""
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            try:
                await self.slots.renew()
            except STORE_ERRORS as error:
                self._count_store_error("concurrency", error)

    async def aclose(self) -> None:
        if self.redis is not None:
            # Shielded: the app closes it while its task group is being cancelled.
            with anyio.CancelScope(shield=True):
                await self.redis.aclose()

    async def _count_request(self, caller: AuthenticatedKey, per_minute: int) -> dict[str, str]:
        try:
            state = await self.window.hit(caller.key_id, per_minute)
        except STORE_ERRORS as error:
            self._store_failed("requests", error)
            return {}
        headers = rate_limit_headers(state)
        if not state.admitted:
            RATE_LIMITED_REQUESTS.labels("requests").inc()
            wait = state.retry_after_seconds
            raise RateLimited(
                f"Rate limit reached for requests per minute (RPM) on API key "
                f"{caller.key_prefix}…: Limit {per_minute}, Used {per_minute}, Requested 1. "
                f"Please try again in {openai_duration(wait)}.",
                retry_after_seconds=wait,
                rate_limit_headers=headers,
            )
        return headers

    async def _refuse_concurrency(self, caller: AuthenticatedKey, limit: int) -> None:
        headers: dict[str, str] = {}
        if caller.plan.requests_per_minute is not None:
            try:
                state = await self.window.peek(caller.key_id, caller.plan.requests_per_minute)
                headers = rate_limit_headers(state)
            except STORE_ERRORS as error:
                self._count_store_error("requests", error)
        RATE_LIMITED_REQUESTS.labels("concurrency").inc()
        raise RateLimited(
            f"Too many concurrent requests on API key {caller.key_prefix}…: Limit {limit} in "
            "flight. Please retry when one of them has finished.",
            retry_after_seconds=CONCURRENCY_RETRY_AFTER_SECONDS,
            rate_limit_headers=headers,
        )

    def _store_failed(self, limiter: str, error: Exception) -> None:
        """Count and log the failure; refuse the request when the policy is closed."""
        self._count_store_error(limiter, error)
        if self.on_store_error == "closed":
            raise RateLimiterUnavailable(
                "Rate limits cannot be checked right now. Please retry shortly.",
                retry_after_seconds=STORE_RETRY_AFTER_SECONDS,
            ) from None

    def _count_store_error(self, limiter: str, error: Exception) -> None:
        RATE_LIMITER_ERRORS.labels(limiter).inc()
        outcome = "admitted unlimited" if self.on_store_error == "open" else "refused with 503"
        self.store_warning.warn(
            f"rate-limit store failed ({type(error).__name__}: {error}); requests are {outcome} "
            "while it is down"
        )

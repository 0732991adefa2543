"""Requests per minute per API key: a moving window kept by ``limits``.

A moving window counts the requests of the last 60 seconds exactly, so a key never gets twice its
limit across a minute boundary, as a fixed window would allow.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter


@dataclass(frozen=True)
class WindowState:
    admitted: bool
    limit: int
    remaining: int
    # Until the oldest counted request leaves the window, i.e. until ``remaining`` goes up.
    reset_seconds: float

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.reset_seconds))


class RequestWindow:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)

    async def hit(self, key_id: int, per_minute: int) -> WindowState:
        """Count one request of the key, unless it would exceed ``per_minute``."""
        item = RateLimitItemPerMinute(per_minute)
        admitted = await self.strategy.hit(item, "key", str(key_id))
        return await self._state(item, key_id, admitted=admitted)

    async def peek(self, key_id: int, per_minute: int) -> WindowState:
        """The key's window without counting a request."""
        return await self._state(RateLimitItemPerMinute(per_minute), key_id, admitted=True)

    async def _state(
        self, item: RateLimitItemPerMinute, key_id: int, *, admitted: bool
    ) -> WindowState:
        stats = await self.strategy.get_window_stats(item, "key", str(key_id))
        return WindowState(
            admitted=admitted,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_seconds=max(0.0, stats.reset_time - time.time()),
        )

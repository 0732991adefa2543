"""Moving windows of sign-in attempts, reserved before the attempt is checked and given back
when it turns out not to count (a right password).

Each window is a set of attempt ids with the time each was taken; an attempt is admitted only
when every window it counts in has room, and then it takes a place in all of them at once, so a
concurrent burst gets no more attempts checked than the tightest window allows. In memory for
one process, or in Redis (a sorted set per window, changed by one Lua script) so that every
replica counts the same attempts.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis import Redis


@dataclass(frozen=True)
class Window:
    key: str
    limit: int
    seconds: float


class AttemptWindows(Protocol):
    def reserve(self, windows: Sequence[Window], attempt: str) -> float:
        """0 when ``attempt`` took a place in every window; else the seconds until the fullest
        one has room again (and nothing was taken)."""

    def give_back(self, windows: Sequence[Window], attempt: str) -> None: ...


class MemoryAttemptWindows:
    # Windows nobody touched for this long are dropped whole, so a stream of new addresses or
    # names cannot grow the process without bound.
    SWEEP_SECONDS = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: dict[str, dict[str, float]] = {}
        self._lasts: dict[str, float] = {}
        self._swept = time.monotonic()

    def reserve(self, windows: Sequence[Window], attempt: str) -> float:
        now = time.monotonic()
        with self._lock:
            self._sweep(now)
            wait = 0.0
            for window in windows:
                taken = self._taken.setdefault(window.key, {})
                for old in [name for name, at in taken.items() if at <= now - window.seconds]:
                    del taken[old]
                if len(taken) >= window.limit:
                    wait = max(wait, min(taken.values()) + window.seconds - now)
            if wait > 0:
                for window in windows:
                    if not self._taken[window.key]:
                        del self._taken[window.key]
                return wait
            for window in windows:
                self._taken[window.key][attempt] = now
                self._lasts[window.key] = now + window.seconds
            return 0.0

    def give_back(self, windows: Sequence[Window], attempt: str) -> None:
        with self._lock:
            for window in windows:
                self._taken.get(window.key, {}).pop(attempt, None)

    def _sweep(self, now: float) -> None:
        if now - self._swept < self.SWEEP_SECONDS:
            return
        self._swept = now
        for key in [key for key, until in self._lasts.items() if until <= now]:
            self._taken.pop(key, None)
            del self._lasts[key]


# KEYS: the windows; ARGV: now, the attempt id, then each window's limit and length in seconds.
_RESERVE = """
local now = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit, seconds = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - seconds)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + seconds - now)
  end
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[2 + 2 * i]) * 1000))
end
return '0'
"""


class RedisAttemptWindows:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._reserve = redis.register_script(_RESERVE)

    def reserve(self, windows: Sequence[Window], attempt: str) -> float:
        # Wall-clock time, the same on every replica of a synchronized fleet.
        arguments: list[str | float] = [time.time(), attempt]
        for window in windows:
            arguments += [window.limit, window.seconds]
        answer = self._reserve(keys=[window.key for window in windows], args=arguments)
        wait = float(answer)
        return wait if math.isfinite(wait) else 0.0

    def give_back(self, windows: Sequence[Window], attempt: str) -> None:
        pipeline = self.redis.pipeline(transaction=False)
        for window in windows:
            pipeline.zrem(window.key, attempt)
        pipeline.execute()

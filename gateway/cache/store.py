"""Where cached results live: a byte-bounded LRU in process memory by default, Redis (shared by
every replica) when ``GATEWAY_REDIS_URL`` is set.

A cache never fails a request: a Redis error is logged, counted and treated as a miss (or a
skipped store).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway import metrics

logger = logging.getLogger(__name__)


class ResultStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...


class MemoryResultStore:
    """LRU bounded by the bytes of its values; entries expire after ``ttl_seconds``."""

    def __init__(
        self,
        max_bytes: int,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.size_bytes = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    async def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored_at, value = entry
            if self.clock() - stored_at >= self.ttl_seconds:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return value

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (self.clock(), value)
            self.size_bytes += len(value)
            while self.size_bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))
            metrics.CACHE_BYTES.set(self.size_bytes)

    def _drop(self, key: str) -> None:
        _stored_at, value = self._entries.pop(key)
        self.size_bytes -= len(value)
        metrics.CACHE_BYTES.set(self.size_bytes)


class RedisResultStore:
    """Entries under ``<prefix>:result:<key>`` with Redis's own expiry."""

    def __init__(self, redis: Redis, prefix: str, ttl_seconds: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = max(int(ttl_seconds * 1000), 1)

    def _name(self, key: str) -> str:
        return f"{self.prefix}:result:{key}"

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.redis.get(self._name(key))
        except (RedisError, OSError) as error:
            self._failed("get", error)
            return None
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self.redis.set(self._name(key), value, px=self.ttl_ms)
        except (RedisError, OSError) as error:
            self._failed("put", error)

    @staticmethod
    def _failed(operation: str, error: Exception) -> None:
        metrics.CACHE_ERRORS.labels(operation=operation).inc()
        logger.warning("result cache %s failed, served without the cache: %r", operation, error)

"""Where rate-limit state lives: process memory by default, Redis when ``GATEWAY_REDIS_URL`` is
set (shared by every replica)."""

from __future__ import annotations

import bisect
import time
from typing import Any

from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.config import GatewaySettings

# What an unreachable, slow or failing Redis raises; anything else is a bug and propagates.
STORE_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, StorageError)

# The scheme limits expects for each redis-py URL scheme.
LIMITS_SCHEMES = {"redis": "async+redis", "rediss": "async+rediss", "unix": "async+redis+unix"}


class LoopMemoryStorage(MemoryStorage):
    """limits' in-memory storage, with its expiry pass run on the event loop.

    On every hit, limits' ``MemoryStorage`` starts a pass that trims each key's expired entries
    and bisects each key's list on a worker thread: a thread hand-off per request for a few
    microseconds of work. The same pass runs here on the loop. Nothing in it awaits, so it is
    atomic with respect to the hits, which take their per-key locks without awaiting inside.
    """

    async def _MemoryStorage__expire_events(self) -> None:
        now = time.time()
        for key in list(self.events):
            events = self.events[key]
            # Newest first: entries from ``cutoff`` on have expired.
            cutoff = bisect.bisect_left(events, -now, key=lambda entry: -entry.expiry)
            if cutoff:
                self.events[key] = events[:cutoff]
            else:
                del self.events[key]
                self.locks.pop(key, None)
        for key, expires in list(self.expirations.items()):
            if expires <= now:
                self.storage.pop(key, None)
                del self.expirations[key]
                self.locks.pop(key, None)


def open_redis(settings: GatewaySettings) -> Redis:
    """A client that fails fast: one socket timeout per command at most, no retries, so an outage
    costs a request a fraction of a second rather than a hang."""
    scheme = settings.redis_url.partition("://")[0]
    if scheme not in LIMITS_SCHEMES:
        raise ValueError(
            f"GATEWAY_REDIS_URL must start with redis://, rediss:// or unix://, not {scheme!r}"
        )
    timeout = settings.redis_socket_timeout_seconds
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def window_storage(settings: GatewaySettings, redis: Redis | None) -> Storage:
    """The storage of the per-minute windows; on Redis it shares ``redis``'s connection pool."""
    if redis is None:
        return LoopMemoryStorage()
    scheme, _, rest = settings.redis_url.partition("://")
    # limits types its options as scalars, though it hands them to redis-py as they are.
    shared_pool: dict[str, Any] = {"connection_pool": redis.connection_pool}
    return RedisStorage(
        f"{LIMITS_SCHEMES[scheme]}://{rest}",
        implementation="redispy",
        key_prefix=settings.rate_limit_key_prefix,
        **shared_pool,
    )

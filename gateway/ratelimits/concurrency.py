"""Requests in flight per API key: a slot is taken on admission and given back when the request
ends, however it ends.

In memory the slots are a counter per key. In Redis they are a sorted set per key whose members
are leases scored by their expiry (Redis server time, so replicas' clocks do not matter): the
replica holding a lease renews it every third of ``lease_seconds``, and a crashed replica's leases
lapse on their own within ``lease_seconds``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

# KEYS[1] the key's slot set; ARGV: limit, lease id, lease milliseconds. 1 = taken, 0 = full.
ACQUIRE_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: slot sets; ARGV[1] lease milliseconds, ARGV[i + 1] the lease held in KEYS[i]. XX: a lease
# that already lapsed stays gone rather than coming back.
RENEW_SCRIPT = """
local now = redis.call('TIME')
local expiry = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', expiry, ARGV[i + 1])
  redis.call('PEXPIRE', key, ARGV[1])
end
return #KEYS
"""


@dataclass(frozen=True)
class Slot:
    key: str
    lease: str


class ConcurrencySlots(Protocol):
    async def acquire(self, key_id: int, limit: int) -> Slot | None:
        """A slot of the key, or None when ``limit`` requests of it are in flight."""

    async def release(self, slot: Slot) -> None: ...

    async def renew(self) -> None:
        """Extend the leases this process holds (no-op where slots do not expire)."""


class MemorySlots:
    """One process's slots. The event loop runs each call without interleaving, so no lock."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}

    async def acquire(self, key_id: int, limit: int) -> Slot | None:
        key = str(key_id)
        if self.in_flight.get(key, 0) >= limit:
            return None
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        return Slot(key=key, lease="")

    async def release(self, slot: Slot) -> None:
        remaining = self.in_flight.get(slot.key, 0) - 1
        if remaining > 0:
            self.in_flight[slot.key] = remaining
        else:
            self.in_flight.pop(slot.key, None)

    async def renew(self) -> None:
        return None


class RedisSlots:
    def __init__(self, redis: Redis, key_prefix: str, lease_seconds: float) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.lease_ms = int(lease_seconds * 1000)
        self.acquire_script = redis.register_script(ACQUIRE_SCRIPT)
        self.renew_script = redis.register_script(RENEW_SCRIPT)
        # Leases this process holds, renewed until released.
        self.held: dict[str, str] = {}

    async def acquire(self, key_id: int, limit: int) -> Slot | None:
        slot = Slot(key=f"{self.key_prefix}:concurrency:{key_id}", lease=uuid.uuid4().hex)
        taken = await self.acquire_script(keys=[slot.key], args=[limit, slot.lease, self.lease_ms])
        if not taken:
            return None
        self.held[slot.lease] = slot.key
        return slot

    async def release(self, slot: Slot) -> None:
        self.held.pop(slot.lease, None)
        await self.redis.zrem(slot.key, slot.lease)

    async def renew(self) -> None:
        held = dict(self.held)
        if held:
            await self.renew_script(keys=list(held.values()), args=[self.lease_ms, *held])

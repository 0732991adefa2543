"""Look up and remember canonical results by tenant + audio MD5 + transcript-changing params.

Per tenant by default, so no tenant can learn whether another sent some audio; the global mode
(``GATEWAY_CACHE_SCOPE=global``) shares results across tenants and is off unless chosen.
Whatever the mode, a hit is billed to the tenant that asked, at its plan's cache-hit price.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import ValidationError
from redis.asyncio import Redis

from gateway import metrics
from gateway.cache.keys import result_cache_key
from gateway.cache.store import MemoryResultStore, RedisResultStore, ResultStore
from gateway.config import GatewaySettings
from inference.protocol import TranscribeParams, TranscriptionResult

logger = logging.getLogger(__name__)


class ResultCache:
    def __init__(self, store: ResultStore, scope: Literal["tenant", "global"]) -> None:
        self.store = store
        self.scope = scope

    def _key(self, tenant_id: int, md5: str, params: TranscribeParams) -> str:
        return result_cache_key(tenant_id if self.scope == "tenant" else None, md5, params)

    async def lookup(
        self, tenant_id: int, md5: str, params: TranscribeParams
    ) -> TranscriptionResult | None:
        raw = await self.store.get(self._key(tenant_id, md5, params))
        result = None
        if raw is not None:
            try:
                result = TranscriptionResult.model_validate_json(raw)
            except ValidationError:
                logger.warning("ignoring an unreadable cached result")
        metrics.CACHE_LOOKUPS.labels(result="hit" if result is not None else "miss").inc()
        return result

    async def remember(
        self, tenant_id: int, md5: str, params: TranscribeParams, result: TranscriptionResult
    ) -> None:
        value = result.model_dump_json().encode()
        await self.store.put(self._key(tenant_id, md5, params), value)


def build_result_cache(settings: GatewaySettings, redis: Redis | None) -> ResultCache | None:
    """The configured cache, or None when ``GATEWAY_CACHE_ENABLED`` is false. With Redis the
    results are shared by every replica."""
    if not settings.cache_enabled:
        return None
    store: ResultStore
    if redis is not None:
        store = RedisResultStore(redis, settings.rate_limit_key_prefix, settings.cache_ttl_seconds)
    else:
        store = MemoryResultStore(settings.cache_max_bytes, settings.cache_ttl_seconds)
    return ResultCache(store, settings.cache_scope)

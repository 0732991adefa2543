"""Per-address throttling of API key guesses, with slowapi over ``limits``.

A key that authenticates no one (unknown, revoked or expired) is a failed authentication, and
counts against the client's address (an IPv4 address, an IPv6 /64) in a moving window of
``GATEWAY_API_KEY_FAILURE_LIMIT`` (30/minute). Once the window is full the address's requests
get 429 ``too_many_failed_authentications`` before their key is looked up, so a throttled
address cannot learn whether a key it guessed is valid. A key already in this gateway's key
cache was found valid and is never slowed; a missing key is not a guess and is not counted.

slowapi's ``Limiter`` holds the storage (``memory://``, or ``GATEWAY_REDIS_URL`` so every
replica counts the same failures) and the moving-window strategy; when the store fails,
``GATEWAY_RATE_LIMIT_ON_STORE_ERROR`` decides (``open`` looks the key up, ``closed`` answers
503 ``rate_limiter_unavailable``).
"""

from __future__ import annotations

import logging
import math
import time

import anyio
from limits import RateLimitItem, parse
from slowapi import Limiter
from slowapi.util import get_remote_address

from gateway.config import GatewaySettings
from gateway.errors import RateLimiterUnavailable, TooManyFailedAuthentications
from gateway.ratelimits.addresses import address_group

logger = logging.getLogger(__name__)
SCOPE = "api-key-failures"


class KeyGuessThrottle:
    def __init__(self, settings: GatewaySettings) -> None:
        self.item: RateLimitItem = parse(settings.api_key_failure_limit)
        self.fail_open = settings.rate_limit_on_store_error == "open"
        self.shared = bool(settings.redis_url)
        timeout = settings.redis_socket_timeout_seconds
        self.slowapi = Limiter(
            key_func=get_remote_address,
            storage_uri=settings.redis_url or "memory://",
            storage_options=(
                {"socket_timeout": timeout, "socket_connect_timeout": timeout}  # type: ignore[dict-item]
                if settings.redis_url
                else {}
            ),
            strategy="moving-window",
        )
        self.prefix = f"{settings.rate_limit_key_prefix}:api-key"

    def _key(self, address: str | None) -> list[str]:
        return [self.prefix, address_group(address), SCOPE]

    def refuse_if_throttled(self, address: str | None) -> None:
        """429 with Retry-After while ``address`` has used up its failed authentications."""
        key = self._key(address)
        try:
            if self.slowapi.limiter.test(self.item, *key):
                return
            reset_at, _remaining = self.slowapi.limiter.get_window_stats(self.item, *key)
        except Exception as error:
            self._store_failed(error)
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise TooManyFailedAuthentications(
            f"Too many requests with an invalid API key from this address; try again in "
            f"{retry_after} seconds.",
            retry_after_seconds=retry_after,
        )

    def count_failure(self, address: str | None) -> None:
        try:
            self.slowapi.limiter.hit(self.item, *self._key(address))
        except Exception as error:
            self._store_failed(error)

    async def refuse_if_throttled_async(self, address: str | None) -> None:
        # Redis is a blocking client: off the event loop. Memory is a dict: no thread hop.
        if self.shared:
            await anyio.to_thread.run_sync(self.refuse_if_throttled, address)
        else:
            self.refuse_if_throttled(address)

    async def count_failure_async(self, address: str | None) -> None:
        if self.shared:
            await anyio.to_thread.run_sync(self.count_failure, address)
        else:
            self.count_failure(address)

    def _store_failed(self, error: Exception) -> None:
        logger.warning("the API key failure throttle's store failed: %s", error)
        if not self.fail_open:
            raise RateLimiterUnavailable(
                "Keys cannot be checked while the rate limiter's store is down; retry later."
            ) from None

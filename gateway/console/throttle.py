"""Per-IP throttling of console sign-in: password, SSO token and portal link alike.

slowapi's ``Limiter`` holds the storage (``memory://``, or ``GATEWAY_REDIS_URL`` so every replica
counts the same attempts) and the moving-window strategy of ``limits``. Only failed attempts
are counted: a person who types their password right is never slowed down, and an address
past the limit is refused before its next attempt is even checked.
"""

from __future__ import annotations

import logging
import math
import time

from fastapi import Request
from limits import RateLimitItem, parse
from slowapi import Limiter
from slowapi.util import get_remote_address

from gateway.config import GatewaySettings
from gateway.console.errors import SignInThrottled
from gateway.errors import RateLimiterUnavailable

logger = logging.getLogger(__name__)
SCOPE = "console-sign-in"


class SignInThrottle:
    def __init__(self, settings: GatewaySettings) -> None:
        self.item: RateLimitItem = parse(settings.console_sign_in_limit)
        self.fail_open = settings.rate_limit_on_store_error == "open"
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
        self.prefix = f"{settings.rate_limit_key_prefix}:console"

    def _key(self, request: Request) -> list[str]:
        return [self.prefix, get_remote_address(request), SCOPE]

    def refuse_if_throttled(self, request: Request) -> None:
        """429 with Retry-After while this address has used up its failed attempts."""
        key = self._key(request)
        try:
            if self.slowapi.limiter.test(self.item, *key):
                return
            reset_at, _remaining = self.slowapi.limiter.get_window_stats(self.item, *key)
        except Exception as error:
            self._store_failed(error)
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise SignInThrottled(
            f"Too many failed sign-in attempts from this address; try again in {retry_after} "
            "seconds.",
            retry_after_seconds=retry_after,
        )

    def count_failure(self, request: Request) -> None:
        try:
            self.slowapi.limiter.hit(self.item, *self._key(request))
        except Exception as error:
            self._store_failed(error)

    def _store_failed(self, error: Exception) -> None:
        logger.warning("the sign-in throttle's store failed: %s", error)
        if not self.fail_open:
            raise RateLimiterUnavailable(
                "Sign-in is unavailable while the rate limiter's store is down; retry later."
            ) from None

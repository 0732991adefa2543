"""Throttling of console sign-in: password, SSO token and portal link alike.

Every attempt takes a place in the moving window of its client address
(``GATEWAY_CONSOLE_SIGN_IN_LIMIT``) and, for a password, in that of the account name it names
(``GATEWAY_CONSOLE_SIGN_IN_ACCOUNT_LIMIT``) *before* it is checked; an attempt that finds either
full is refused (429) unchecked. A right password gives its places back, so a person who types
it right is never slowed down, while a burst of wrong ones gets no more checks than the limits.

Addresses count per IPv4 address and per IPv6 /64 (what one subscriber is usually given). The
account window is the longer, looser one: it stops guesses spread over many addresses, and
lapses on its own, so an attacker can hold a name locked only by going on guessing, at most
the account limit's worth per window, which the address windows also count.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import unicodedata
from dataclasses import dataclass, field

from limits import parse
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.config import GatewaySettings
from gateway.console.attempt_windows import (
    AttemptWindows,
    MemoryAttemptWindows,
    RedisAttemptWindows,
    Window,
)
from gateway.console.errors import SignInThrottled
from gateway.errors import RateLimiterUnavailable
from gateway.ratelimits.addresses import address_group

logger = logging.getLogger(__name__)


def account_group(username: str) -> str:
    """One key for every spelling of a name (case, Unicode forms, surrounding blanks); hashed,
    so that whatever is typed makes a short key."""
    normalised = unicodedata.normalize("NFKC", username.strip()).casefold()
    return hashlib.sha256(normalised.encode()).hexdigest()[:32]


@dataclass
class Reservation:
    """An attempt's places in its windows; ``give_back`` when it turns out not to count."""

    store: AttemptWindows | None
    windows: list[Window]
    attempt: str = field(default_factory=lambda: secrets.token_hex(12))

    def give_back(self) -> None:
        if self.store is None:
            return
        try:
            self.store.give_back(self.windows, self.attempt)
        except Exception as error:
            # The place lapses with its window: a right password counted once, at worst.
            logger.warning("the sign-in throttle's store failed to give back: %s", error)


class SignInThrottle:
    def __init__(self, settings: GatewaySettings) -> None:
        self.per_address = parse(settings.console_sign_in_limit)
        self.per_account = parse(settings.console_sign_in_account_limit)
        self.fail_open = settings.rate_limit_on_store_error == "open"
        self.prefix = f"{settings.rate_limit_key_prefix}:console-sign-in"
        self.store: AttemptWindows = MemoryAttemptWindows()
        if settings.redis_url:
            timeout = settings.redis_socket_timeout_seconds
            redis = Redis.from_url(
                settings.redis_url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self.store = RedisAttemptWindows(redis)

    def reserve(self, address: str | None, account: str | None = None) -> Reservation:
        """A place for one attempt from ``address`` (on ``account``, for a password), taken
        before it is checked; 429 with Retry-After when a window is full."""
        windows = [
            Window(
                f"{self.prefix}:address:{address_group(address)}",
                self.per_address.amount,
                self.per_address.get_expiry(),
            )
        ]
        if account is not None:
            windows.append(
                Window(
                    f"{self.prefix}:account:{account_group(account)}",
                    self.per_account.amount,
                    self.per_account.get_expiry(),
                )
            )
        reservation = Reservation(self.store, windows)
        try:
            wait = self.store.reserve(windows, reservation.attempt)
        except Exception as error:
            logger.warning("the sign-in throttle's store failed: %s", error)
            if not self.fail_open:
                raise RateLimiterUnavailable(
                    "Sign-in is unavailable while the rate limiter's store is down; retry later."
                ) from None
            return Reservation(None, windows)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise SignInThrottled(
                "Too many failed sign-in attempts from this address or for this account; try "
                f"again in {retry_after} seconds.",
                retry_after_seconds=retry_after,
            )
        return reservation

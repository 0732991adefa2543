"""The one way a console password is checked: sign-in, and any page that asks for the password
again before a sensitive action, call ``verify_password_attempt``.

In order: a place in the sign-in throttle's windows (of the address and of the account), the
user's row, then one of a few password-check slots of this process and the argon2 check. Each
check holds 64 MiB for a fraction of a second; the slots bound how many run at once, and a
request that finds none free within ``GATEWAY_CONSOLE_PASSWORD_CHECK_WAIT_SECONDS`` is refused (503
``sign_in_busy``) rather than queued, its throttle place given back since nothing was checked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from billing.db import Database
from billing.models import AdminUser
from gateway.config import GatewaySettings
from gateway.console.errors import SignInBusy
from gateway.console.throttle import SignInThrottle
from gateway.console.users.service import find_user, user_if_password_matches


class PasswordCheckSlots:
    """At most ``size`` password checks at once in this process."""

    def __init__(self, size: int, wait_seconds: float) -> None:
        self.size = size
        self.wait_seconds = wait_seconds
        self._free = threading.BoundedSemaphore(size)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._free.acquire(timeout=self.wait_seconds):
            raise SignInBusy(
                "Too many sign-ins are being checked right now; retry in a moment.",
                retry_after_seconds=1,
            )
        try:
            yield
        finally:
            self._free.release()


class PasswordAttempts:
    def __init__(self, settings: GatewaySettings, throttle: SignInThrottle) -> None:
        self.throttle = throttle
        self.slots = PasswordCheckSlots(
            settings.console_password_checks, settings.console_password_check_wait_seconds
        )

    def verify_password_attempt(
        self, database: Database, username: str, password: str, client_address: str | None
    ) -> AdminUser | None:
        """The active user ``username`` names when ``password`` is theirs, else None (a failed
        attempt, counted against the address and the account). Raises 429
        ``sign_in_throttled`` or 503 ``sign_in_busy`` without checking anything. The user is
        read in a transaction of its own and the hash checked after it ends: on SQLite a
        transaction holds every writer of the process back."""
        reservation = self.throttle.reserve(client_address, account=username)
        try:
            with database.transaction() as session:
                found = find_user(session, username.strip())
            with self.slots.slot():
                user = user_if_password_matches(found, password)
        except BaseException:
            reservation.give_back()
            raise
        if user is not None:
            reservation.give_back()
        return user

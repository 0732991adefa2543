"""Sign-in attempts counted per client address and per account before the password is checked,
and a bound on the password checks one process runs at once.

Clients at other addresses are TestClients given that address (``client=``) on the app whose
lifespan the first client runs. Password checks are held in flight by a hasher whose verify
waits on an event, so the bounds are driven without timing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis import Redis

from billing.db import Database
from billing.migrate import upgrade_to_head
from gateway.console import passwords
from gateway.console.attempt_windows import RedisAttemptWindows, Window
from gateway.console.errors import SignInThrottled
from gateway.console.password_attempts import PasswordAttempts
from gateway.console.throttle import Reservation, address_group
from tests.fixtures.processes import free_port
from tests.fixtures.redis import delete_prefixed, shared_redis_url, unique_prefix
from tests.gateway.console.client import (
    JSON,
    PASSWORD,
    add_user,
    console_client,
    console_settings,
    sign_in,
)
from tests.gateway.test_admin_auth import ISSUER, JwksServer, claims

WRONG = "not the password at all"


def at(app: FastAPI, address: str) -> TestClient:
    """A browser at ``address``, on an app whose lifespan already runs."""
    return TestClient(app, client=(address, 50000))


class HeldHasher(PasswordHasher):
    """argon2, but every verify waits until ``release`` is set; counts what it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.checks = 0
        self.running = 0
        self.most_running = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self._lock:
            self.checks += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.entered.release()
        try:
            assert self.release.wait(timeout=60)
            return super().verify(hash, password)
        finally:
            with self._lock:
                self.running -= 1

    def wait_entered(self, count: int) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=60)


@pytest.fixture
def held_hasher(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldHasher]:
    hasher = HeldHasher()
    passwords._decoy_hash()  # made with the real hasher, before any check is held
    monkeypatch.setattr(passwords, "_hasher", hasher)
    yield hasher
    hasher.release.set()


def statuses(responses: list[Any]) -> list[int]:
    return [response.status_code for response in responses]


class TestPerAccount:
    def test_wrong_passwords_from_many_addresses_are_stopped_per_account(
        self, database: Database
    ) -> None:
        add_user(database, "admin", "owner")
        add_user(database, "olivia", "owner")
        settings = console_settings(
            console_sign_in_limit="5/minute", console_sign_in_account_limit="3/15 minutes"
        )
        with console_client(database, settings) as client:
            app = client.app
            attempts = [sign_in(at(app, f"127.0.0.{2 + n}"), "admin", WRONG) for n in range(6)]
            respelled = sign_in(at(app, "127.0.0.30"), " ADMIN ", WRONG)
            right_while_locked = sign_in(at(app, "127.0.0.31"), "admin")
            other_account = sign_in(at(app, "127.0.0.32"), "olivia")
        assert statuses(attempts) == [401, 401, 401, 429, 429, 429]
        refused = attempts[3]
        assert "sign_in_throttled" in refused.text
        # The account's window is 15 minutes long: it lapses on its own, not at once.
        assert 60 < int(refused.headers["retry-after"]) <= 900
        assert respelled.status_code == 429  # one name, however it is written
        assert right_while_locked.status_code == 429
        assert other_account.status_code == 303

    def test_a_right_password_never_counts(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        settings = console_settings(console_sign_in_account_limit="2/15 minutes")
        with console_client(database, settings) as client:
            app = client.app
            rights = [sign_in(at(app, f"127.0.1.{n}"), "olivia") for n in range(1, 5)]
            wrongs = [sign_in(at(app, f"127.0.2.{n}"), "olivia", WRONG) for n in range(1, 4)]
        assert statuses(rights) == [303] * 4
        assert statuses(wrongs) == [401, 401, 429]

    def test_replicas_count_an_account_together_in_redis(self, sqlite_url: str) -> None:
        upgrade_to_head(sqlite_url)
        database = Database(sqlite_url)
        url, prefix = shared_redis_url(), unique_prefix()
        add_user(database, "olivia", "owner")
        settings = console_settings(
            redis_url=url, rate_limit_key_prefix=prefix, console_sign_in_account_limit="2/hour"
        )
        try:
            with (
                console_client(database, settings) as first,
                console_client(database, settings) as second,
            ):
                counted = [
                    sign_in(at(first.app, "127.0.3.1"), "olivia", WRONG),
                    sign_in(at(second.app, "127.0.3.2"), "olivia", WRONG),
                ]
                refused = sign_in(at(first.app, "127.0.3.3"), "olivia")
        finally:
            delete_prefixed(url, prefix)
            database.dispose()
        assert statuses(counted) == [401, 401]
        assert refused.status_code == 429
        assert 60 < int(refused.headers["retry-after"]) <= 3600


class TestPerAddress:
    def test_an_ipv6_slash_64_counts_as_one_client_and_ipv4_per_address(
        self, database: Database
    ) -> None:
        settings = console_settings(console_sign_in_limit="2/minute")
        with console_client(database, settings) as client:
            app = client.app
            same_64 = [
                sign_in(at(app, "2001:db8:0:7::1"), "user-a", WRONG),
                sign_in(at(app, "2001:db8:0:7::2"), "user-b", WRONG),
                sign_in(at(app, "2001:db8:0:7:ffff::9"), "user-c", WRONG),
            ]
            next_64 = sign_in(at(app, "2001:db8:0:8::1"), "user-d", WRONG)
            neighbours = [
                sign_in(at(app, "127.0.4.1"), "user-e", WRONG),
                sign_in(at(app, "127.0.4.1"), "user-f", WRONG),
                sign_in(at(app, "127.0.4.2"), "user-g", WRONG),
            ]
        assert statuses(same_64) == [401, 401, 429]
        assert next_64.status_code == 401
        assert statuses(neighbours) == [401, 401, 401]

    def test_an_ipv4_address_mapped_into_ipv6_is_the_ipv4_address(self) -> None:
        assert address_group("::ffff:192.0.2.7") == address_group("192.0.2.7") == "192.0.2.7"
        assert address_group("2001:db8::1") == "2001:db8::/64"


class TestSingleSignOnAttempts:
    def test_only_a_refused_token_counts_not_a_provider_out_of_reach(
        self, database: Database
    ) -> None:
        provider = JwksServer()
        provider.close()  # its keys cannot be fetched
        signed = jwt.encode(
            claims(scope="tenants:read"), provider.rsa_key, algorithm="RS256",
            headers={"kid": "rsa-1"},
        )  # fmt: skip
        settings = console_settings(
            admin_jwks_url=provider.url, admin_jwt_issuer=ISSUER, console_sign_in_limit="1/minute"
        )

        def sso(token: str) -> Any:
            return client.post(
                "/console/sign-in/sso", headers={"Authorization": f"Bearer {token}", **JSON}
            )

        with console_client(database, settings) as client:
            unreachable = [sso(signed), sso(signed)]
            refused = [sso("not-a-token"), sso("not-a-token")]
        assert statuses(unreachable) == [503, 503]
        assert unreachable[0].json()["error"]["code"] == "auth_unavailable"
        assert statuses(refused) == [401, 429]
        assert refused[1].json()["error"]["code"] == "sign_in_throttled"


class TestConcurrentAttempts:
    def test_a_burst_gets_no_more_password_checks_than_the_limit(
        self, database: Database, held_hasher: HeldHasher
    ) -> None:
        add_user(database, "olivia", "owner")
        settings = console_settings(console_sign_in_limit="3/minute", console_password_checks=10)
        with console_client(database, settings) as client, ThreadPoolExecutor(3) as pool:
            app = client.app
            held = [pool.submit(sign_in, at(app, "127.0.5.1"), "olivia", WRONG) for _ in range(3)]
            held_hasher.wait_entered(3)
            # Three checks of this address are running: their places are taken already.
            refused = [sign_in(at(app, "127.0.5.1"), "olivia", WRONG) for _ in range(3)]
            held_hasher.release.set()
            answered = [future.result(timeout=60) for future in held]
        assert statuses(refused) == [429, 429, 429]
        assert statuses(answered) == [401, 401, 401]
        assert held_hasher.checks == 3


class TestPasswordCheckSlots:
    def test_a_sign_in_finding_every_slot_taken_is_refused_and_not_counted(
        self, database: Database, held_hasher: HeldHasher
    ) -> None:
        add_user(database, "olivia", "owner")
        settings = console_settings(
            console_sign_in_limit="3/minute",
            console_password_checks=2,
            console_password_check_wait_seconds=0,
        )
        with console_client(database, settings) as client, ThreadPoolExecutor(2) as pool:
            app = client.app
            held = [pool.submit(sign_in, at(app, "127.0.6.1"), "olivia", WRONG) for _ in range(2)]
            held_hasher.wait_entered(2)
            busy = sign_in(at(app, "127.0.6.1"), "olivia")
            held_hasher.release.set()
            answered = [future.result(timeout=60) for future in held]
            # Two failures counted, the refused attempt not: the third place is still free.
            third = sign_in(at(app, "127.0.6.1"), "olivia", WRONG)
        assert busy.status_code == 503
        assert "sign_in_busy" in busy.text
        assert busy.headers["retry-after"] == "1"
        assert statuses(answered) == [401, 401]
        assert third.status_code == 401
        assert held_hasher.checks == 3

    def test_a_sign_in_waits_for_a_slot_and_no_more_checks_run_at_once(
        self, database: Database, held_hasher: HeldHasher
    ) -> None:
        add_user(database, "olivia", "owner")
        settings = console_settings(
            console_password_checks=2, console_password_check_wait_seconds=60
        )
        with console_client(database, settings) as client, ThreadPoolExecutor(3) as pool:
            app = client.app
            addresses = ["127.0.7.1", "127.0.7.2", "127.0.7.3"]
            answers = [pool.submit(sign_in, at(app, address), "olivia") for address in addresses]
            held_hasher.wait_entered(2)
            held_hasher.release.set()
            answered = [future.result(timeout=60) for future in answers]
        assert statuses(answered) == [303, 303, 303]
        assert held_hasher.checks == 3
        assert held_hasher.most_running == 2


class TestVerifyPasswordAttempt:
    def test_the_seam_checks_counts_and_refuses_like_sign_in(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        settings = console_settings(console_sign_in_account_limit="2/15 minutes")
        with console_client(database, settings) as client:
            attempts: PasswordAttempts = client.app.state.console_password_attempts  # type: ignore[attr-defined]
            user = attempts.verify_password_attempt(database, "olivia", PASSWORD, "127.0.8.1")
            wrong = [
                attempts.verify_password_attempt(database, "olivia", WRONG, "127.0.8.1")
                for _ in range(2)
            ]
            with pytest.raises(SignInThrottled) as refused:
                attempts.verify_password_attempt(database, "olivia", PASSWORD, "127.0.8.2")
        assert user is not None
        assert user.username == "olivia"
        assert wrong == [None, None]
        assert refused.value.code == "sign_in_throttled"
        assert refused.value.status_code == 429


class TestStoreOutage:
    def test_a_place_that_cannot_be_given_back_is_logged_not_raised(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
        windows = [Window("asrgw-test:console-sign-in:address:192.0.2.1", 5, 60)]
        reservation = Reservation(RedisAttemptWindows(dead), windows)
        with caplog.at_level(logging.WARNING, logger="gateway.console.throttle"):
            reservation.give_back()
        assert "the sign-in throttle's store failed to give back" in caplog.text

"""Failed API key authentications are throttled per client address: past
``GATEWAY_API_KEY_FAILURE_LIMIT`` an address's keys are not looked up (429), while a valid key
already known to the key cache, and every other address, go on as before."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from billing.config import BillingSettings
from billing.db import Database
from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.fixtures.factories import create_tenant_with_key
from tests.fixtures.processes import free_port
from tests.fixtures.redis import delete_prefixed, shared_redis_url, unique_prefix
from tests.gateway.admin_client import admin_settings, bearer

GUESS = "sk-asrgw-guess0000_00000000000000000000000000000000"


@contextmanager
def client_at(database: Database, settings: GatewaySettings, address: str) -> Iterator[TestClient]:
    app = create_app(settings, BillingSettings(database_url=database.url))
    with TestClient(app, client=(address, 50000)) as client:
        yield client


def models(client: TestClient, key: str) -> tuple[int, str, str | None]:
    response = client.get("/v1/models", headers=bearer(key))
    code = response.json()["error"]["code"] if response.status_code >= 400 else ""
    return response.status_code, code, response.headers.get("retry-after")


class TestFailedAuthenticationsPerAddress:
    def test_an_address_past_the_limit_gets_429_before_its_keys_are_looked_up(
        self, database: Database, limit_store: dict[str, Any]
    ) -> None:
        valid = create_tenant_with_key(database, "acme")
        settings = admin_settings(
            api_key_failure_limit="3/minute", key_cache_seconds=0, **limit_store
        )
        with client_at(database, settings, "198.51.100.7") as client:
            answers = [models(client, GUESS) for _ in range(4)]
            # A valid key from the throttled address is not looked up either: it must not learn
            # which of its guesses would have worked.
            valid_from_there = models(client, valid)
        assert [status for status, _, _ in answers] == [401, 401, 401, 429]
        assert answers[0][1] == "invalid_api_key"
        assert answers[3][1] == "too_many_failed_authentications"
        assert answers[3][2] is not None
        assert 1 <= int(answers[3][2]) <= 60
        assert valid_from_there[:2] == (429, "too_many_failed_authentications")

    def test_other_addresses_and_a_cached_valid_key_are_not_slowed(
        self, database: Database, limit_store: dict[str, Any]
    ) -> None:
        valid = create_tenant_with_key(database, "acme")
        settings = admin_settings(api_key_failure_limit="2/minute", **limit_store)
        app = create_app(settings, BillingSettings(database_url=database.url))
        with (
            TestClient(app, client=("198.51.100.7", 50000)) as guesser,
            TestClient(app, client=("203.0.113.9", 50000)) as neighbour,
        ):
            assert models(guesser, valid)[0] == 200  # now in the key cache
            guesses = [models(guesser, GUESS)[0] for _ in range(3)]
            cached = models(guesser, valid)
            elsewhere = models(neighbour, GUESS)
        assert guesses == [401, 401, 429]
        assert cached[0] == 200
        assert elsewhere[:2] == (401, "invalid_api_key")

    def test_an_ipv6_64_counts_as_one_address(self, database: Database) -> None:
        settings = admin_settings(api_key_failure_limit="2/minute")
        app = create_app(settings, BillingSettings(database_url=database.url))
        with (
            TestClient(app, client=("2001:db8:1:2::10", 50000)) as first,
            TestClient(app, client=("2001:db8:1:2::20", 50000)) as same_64,
            TestClient(app, client=("2001:db8:1:3::10", 50000)) as next_64,
        ):
            answers = [models(first, GUESS)[0], models(same_64, GUESS)[0]]
            answers += [models(same_64, GUESS)[0], models(next_64, GUESS)[0]]
        assert answers == [401, 401, 429, 401]

    def test_a_missing_key_is_not_a_guess(self, database: Database) -> None:
        settings = admin_settings(api_key_failure_limit="1/minute")
        with client_at(database, settings, "198.51.100.7") as client:
            missing = [client.get("/v1/models").status_code for _ in range(3)]
            first_guess = models(client, GUESS)
        assert missing == [401, 401, 401]
        assert first_guess[:2] == (401, "invalid_api_key")

    def test_replicas_count_the_same_failures_in_redis(self, database: Database) -> None:
        url, prefix = shared_redis_url(), unique_prefix()
        try:
            settings = admin_settings(
                api_key_failure_limit="2/minute", redis_url=url, rate_limit_key_prefix=prefix
            )
            with (
                client_at(database, settings, "198.51.100.7") as one,
                client_at(database, settings, "198.51.100.7") as two,
            ):
                answers = [models(one, GUESS)[0], models(two, GUESS)[0], models(one, GUESS)[0]]
        finally:
            delete_prefixed(url, prefix)
        assert answers == [401, 401, 429]

    def test_an_unreachable_store_follows_the_store_error_setting(self, database: Database) -> None:
        unreachable = f"redis://127.0.0.1:{free_port()}/0"
        open_settings = admin_settings(api_key_failure_limit="1/minute", redis_url=unreachable)
        closed_settings = admin_settings(
            api_key_failure_limit="1/minute",
            redis_url=unreachable,
            rate_limit_on_store_error="closed",
        )
        with client_at(database, open_settings, "198.51.100.7") as client:
            opened = [models(client, GUESS)[:2] for _ in range(2)]
        with client_at(database, closed_settings, "198.51.100.7") as client:
            closed = models(client, GUESS)
        assert opened == [(401, "invalid_api_key")] * 2
        assert closed[:2] == (503, "rate_limiter_unavailable")


def test_the_limit_must_be_in_limits_notation() -> None:
    with pytest.raises(ValueError, match="not a limit"):
        admin_settings(api_key_failure_limit="thirty a minute")

"""Money through the whole request path: reservations under concurrency, idempotent retries,
failures that bill nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from billing.config import BillingSettings
from billing.db import Database
from billing.migrate import upgrade_to_head
from billing.models import Reservation
from gateway.app import create_app
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running
from tests.gateway.conftest import gateway_settings

# One token per audio second: every request's transcript is longer than the bound, so each is
# billed exactly its reservation and "credit for 20 requests" is exact whatever the timing.
BOUND = {"max_tokens_per_audio_second": 1}
# espeak's 2.1 s sentence: ceil(2.1) = 3 tokens at 20,000 micros per 1k tokens = 60 micros.
COST_PER_REQUEST = 60


def open_reservations(database: Database) -> int:
    with database.transaction() as session:
        return len(session.exec(select(Reservation).where(Reservation.state == "open")).all())


def post(
    client: TestClient | httpx.Client, key: str, audio: bytes, **headers: str
) -> httpx.Response:
    return client.post(
        "/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {key}", **headers},
        files={"file": ("speech.wav", audio, "audio/wav")},
        data={"model": "whisper-1"},
    )


def assert_exactly_twenty(responses: list[httpx.Response], database: Database) -> None:
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: 20, 402: 30}
    for response in responses:
        if response.status_code == 402:
            assert response.json()["error"]["code"] == "insufficient_quota"
        else:
            assert response.headers["x-billing-cost-micros"] == str(COST_PER_REQUEST)
    rows = usage_rows(database)
    assert len(rows) == 20
    totals = account(database, "prepaid")
    assert sum(row.cost_micros for row in rows) == totals.spent_micros == 20 * COST_PER_REQUEST
    assert totals.available_micros == 0
    assert totals.reserved_micros == 0
    assert open_reservations(database) == 0


class TestCreditUnderConcurrency:
    def test_fifty_requests_credit_for_twenty(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(
            database, "prepaid", prepaid=True, credit_micros=20 * COST_PER_REQUEST, **BOUND
        )
        # Each request is a real dispatch: with the result cache on, repeats of this audio would
        # be free cache hits and leave the credit untouched.
        settings = gateway_settings(node_url, cache_enabled=False)
        app = create_app(settings, BillingSettings(database_url=database.url))
        audio = weather_wav.read_bytes()
        with TestClient(app) as client, ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(lambda _: post(client, key, audio), range(50)))
        assert_exactly_twenty(responses, database)

    @pytest.mark.postgres
    def test_two_gateway_processes_share_the_credit(
        self, node_url: str, postgres_url: str, weather_wav: Path, tmp_path: Path
    ) -> None:
        upgrade_to_head(postgres_url)
        database = Database(postgres_url)
        key = create_tenant_with_key(
            database, "prepaid", prepaid=True, credit_micros=20 * COST_PER_REQUEST, **BOUND
        )
        environment = {
            "BILLING_DATABASE_URL": postgres_url,
            "GATEWAY_NODES": node_url,
            "GATEWAY_NODE_SECRET": NODE_SECRET,
            "GATEWAY_CACHE_ENABLED": "false",
        }
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        audio = weather_wav.read_bytes()

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as client:
                return list(
                    await asyncio.gather(
                        *(
                            client.post(
                                f"{urls[index % 2]}/v1/audio/transcriptions",
                                headers={"Authorization": f"Bearer {key}"},
                                files={"file": ("speech.wav", audio, "audio/wav")},
                                data={"model": "whisper-1"},
                            )
                            for index in range(50)
                        )
                    )
                )

        with (
            running(
                ["gateway", "--port", str(ports[0])],
                environment,
                f"{urls[0]}/health/ready",
                tmp_path / "gateway-a.log",
            ),
            running(
                ["gateway", "--port", str(ports[1])],
                environment,
                f"{urls[1]}/health/ready",
                tmp_path / "gateway-b.log",
            ),
        ):
            responses = asyncio.run(fire())
        try:
            assert_exactly_twenty(responses, database)
        finally:
            database.dispose()


class TestIdempotencyKey:
    def test_five_concurrent_retries_bill_once(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        app = create_app(gateway_settings(node_url), BillingSettings(database_url=database.url))
        audio = weather_wav.read_bytes()
        with TestClient(app) as client, ThreadPoolExecutor(max_workers=5) as pool:
            responses = list(
                pool.map(
                    lambda _: post(client, key, audio, **{"Idempotency-Key": "retry-1"}), range(5)
                )
            )
        assert [response.status_code for response in responses] == [200] * 5
        assert len({response.content for response in responses}) == 1
        assert sum("idempotent-replayed" in response.headers for response in responses) == 4
        (row,) = usage_rows(database)
        assert account(database, "acme").spent_micros == row.cost_micros
        assert responses[0].headers["x-billing-cost-micros"] == str(row.cost_micros)

    def test_the_same_key_with_other_audio_is_refused(
        self, node_url: str, database: Database, weather_wav: Path, two_sentences_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        app = create_app(gateway_settings(node_url), BillingSettings(database_url=database.url))
        with TestClient(app) as client:
            first = post(client, key, weather_wav.read_bytes(), **{"Idempotency-Key": "k"})
            other = post(client, key, two_sentences_wav.read_bytes(), **{"Idempotency-Key": "k"})
        assert first.status_code == 200
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        assert len(usage_rows(database)) == 1

    def test_a_failed_attempt_frees_the_key(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        dead = create_app(
            gateway_settings(f"http://127.0.0.1:{free_port()}"),
            BillingSettings(database_url=database.url),
        )
        with TestClient(dead) as client:
            failed = post(client, key, weather_wav.read_bytes(), **{"Idempotency-Key": "k2"})
        live = create_app(gateway_settings(node_url), BillingSettings(database_url=database.url))
        with TestClient(live) as client:
            retried = post(client, key, weather_wav.read_bytes(), **{"Idempotency-Key": "k2"})
        assert failed.status_code == 503
        assert retried.status_code == 200
        assert "idempotent-replayed" not in retried.headers
        assert len(usage_rows(database)) == 1


class TestFailuresBillNothing:
    def test_node_down_releases_the_reservation(
        self, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "prepaid", prepaid=True, credit_micros=10_000)
        app = create_app(
            gateway_settings(f"http://127.0.0.1:{free_port()}"),
            BillingSettings(database_url=database.url),
        )
        with TestClient(app) as client:
            response = post(client, key, weather_wav.read_bytes())
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "upstream_unavailable"
        with database.transaction() as session:
            (held,) = session.exec(select(Reservation)).all()
        assert held.state == "released"
        totals = account(database, "prepaid")
        assert (totals.reserved_micros, totals.spent_micros, totals.available_micros) == (
            0,
            0,
            10_000,
        )
        assert usage_rows(database) == []


class TestCustomerUsage:
    def test_usage_shows_spend_quota_and_credit(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(
            database, "acme", prepaid=True, credit_micros=1_000_000, monthly_token_quota=10_000
        )
        app = create_app(gateway_settings(node_url), BillingSettings(database_url=database.url))
        with TestClient(app) as client:
            billed = post(client, key, weather_wav.read_bytes())
            usage = client.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})
            anonymous = client.get("/v1/usage")
        assert usage.status_code == 200
        body = usage.json()
        cost = int(billed.headers["x-billing-cost-micros"])
        tokens = int(billed.headers["x-billing-output-tokens"])
        assert body["tenant"] == "acme"
        assert body["billing"] == "prepaid"
        assert body["cost_micros"] == cost
        assert body["credit"] == {
            "granted_micros": 1_000_000,
            "spent_micros": cost,
            "reserved_micros": 0,
            "available_micros": 1_000_000 - cost,
        }
        assert body["quota"]["used_tokens"] == tokens
        assert body["quota"]["remaining_tokens"] == 10_000 - tokens
        (key_usage,) = body["keys"]
        assert (key_usage["requests"], key_usage["billed_tokens"]) == (1, tokens)
        assert anonymous.status_code == 401

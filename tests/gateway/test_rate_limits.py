"""Per-key rate limits: requests per minute and requests in flight, in memory and in Redis.

The gateway runs in-process against a node faked with ``httpx.MockTransport`` that can hold
requests in flight; the ledger is real (SQLite).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import struct
import threading
import time
import wave
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from limits.aio.storage import MemoryStorage
from prometheus_client import REGISTRY
from sqlmodel import select

from billing.config import BillingSettings
from billing.db import Database
from billing.keys.service import create_api_key
from billing.migrate import upgrade_to_head
from billing.models import Reservation
from gateway.app import create_app
from gateway.ratelimits.headers import openai_duration
from gateway.ratelimits.store import LoopMemoryStorage
from inference.protocol import READY_PATH
from tests.fixtures.factories import TEST_ACTOR, create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port
from tests.fixtures.redis import redis_server
from tests.gateway.conftest import gateway_settings

FAKE_NODE = "http://fake-node"
MODEL = {
    "id": "pocketsphinx-en",
    "engine": "fake",
    "languages": ["en"],
    "timestamps": True,
    "word_timestamps": False,
    "hotwords": False,
    "loaded": True,
}
RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
# OpenAI's (Go's) duration format: 20ms, 1s, 59.5s, 6m0s.
DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")


AUDIO_SERIAL = itertools.count(1)


def distinct_audio(seconds: float = 1.0) -> bytes:
    """A second of near-silence that differs from every other call's (the result cache would
    answer a repeat without the node)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(16_000)
        audio.writeframes(b"\0\0" * int(16_000 * seconds))
        audio.writeframes(struct.pack("<q", next(AUDIO_SERIAL)))
    return buffer.getvalue()


class FakeNode:
    """A ready node whose transcriptions wait while ``hold`` is set, then answer ``status``."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.status = 200
        self.arrived = 0
        self.transport = httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == READY_PATH:
            return httpx.Response(200, json={"status": "ready", "models": [MODEL]})
        self.arrived += 1
        while self.hold.is_set():
            await anyio.sleep(0.01)
        if self.status != 200:
            body = {"error": {"message": "busy", "type": "t", "code": "node_overloaded"}}
            return httpx.Response(self.status, json=body)
        result = {
            "text": "hello world",
            "language": "en",
            "duration": 1.0,
            "segments": [],
            "model": "pocketsphinx-en",
            "processing_ms": 1,
        }
        return httpx.Response(200, json=result)


@dataclass
class Gateway:
    client: TestClient
    database: Database
    node: FakeNode
    key: str

    def transcribe(self, key: str | None = None, audio: bytes | None = None) -> httpx.Response:
        return self.client.post(
            "/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {key or self.key}"},
            files={"file": ("speech.wav", audio or distinct_audio(), "audio/wav")},
            data={"model": "whisper-1"},
        )


@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[Database]:
    upgrade_to_head(sqlite_url)
    database = Database(sqlite_url)
    yield database
    database.dispose()


@contextmanager
def open_gateway(database: Database, settings: dict[str, Any], **plan: Any) -> Iterator[Gateway]:
    """The gateway in-process on a fake node, with one tenant on a plan of ``plan``."""
    key = create_tenant_with_key(database, "acme", **plan)
    node = FakeNode()
    app = create_app(
        gateway_settings(FAKE_NODE, node_max_attempts=1, **settings),
        BillingSettings(database_url=database.url),
        transport=node.transport,
    )
    with TestClient(app) as client:
        yield Gateway(client=client, database=database, node=node, key=key)


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429
    assert response.json() == {
        "error": {
            "message": response.json()["error"]["message"],
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert 1 <= int(response.headers["retry-after"]) <= 60


def eventually(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class TestOpenAIDuration:
    @pytest.mark.parametrize(
        ("seconds", "expected"),
        [
            (0, "0ms"),
            (0.0201, "21ms"),
            (1, "1s"),
            (1.5, "1.5s"),
            (59.9991, "1m0s"),
            (360, "6m0s"),
            (90.25, "1m30.25s"),
            (3600, "1h0m0s"),
        ],
    )
    def test_formats_like_openai(self, seconds: float, expected: str) -> None:
        assert openai_duration(seconds) == expected


class TestRequestsPerMinute:
    def test_headers_count_down_then_429(
        self, ledger: Database, limit_store: dict[str, str]
    ) -> None:
        with open_gateway(ledger, limit_store, requests_per_minute=3) as gateway:
            admitted = [gateway.transcribe() for _ in range(2)]
            # An error raised after admission still counts and still carries the headers.
            invalid = gateway.transcribe(audio=b"not audio at all")
            refused = gateway.transcribe()

        assert [response.status_code for response in admitted] == [200, 200]
        assert invalid.status_code == 400
        assert invalid.json()["error"]["code"] == "invalid_audio"
        remaining = [
            response.headers["x-ratelimit-remaining-requests"]
            for response in [*admitted, invalid, refused]
        ]
        assert remaining == ["2", "1", "0", "0"]
        for response in [*admitted, invalid, refused]:
            assert response.headers["x-ratelimit-limit-requests"] == "3"
            assert DURATION.match(response.headers["x-ratelimit-reset-requests"])
        assert_rate_limited(refused)
        assert "Limit 3" in refused.json()["error"]["message"]
        assert gateway.node.arrived == 2

    def test_limits_are_per_key(self, ledger: Database, limit_store: dict[str, str]) -> None:
        with open_gateway(ledger, limit_store, requests_per_minute=1) as gateway:
            with ledger.transaction() as session:
                second = create_api_key(session, "acme", name="second", actor=TEST_ACTOR).secret
            first_key = [gateway.transcribe(), gateway.transcribe()]
            second_key = [gateway.transcribe(second), gateway.transcribe(second)]

        assert first_key[0].status_code == 200
        assert_rate_limited(first_key[1])
        assert second_key[0].status_code == 200
        assert second_key[0].headers["x-ratelimit-remaining-requests"] == "0"
        assert_rate_limited(second_key[1])

    def test_plan_without_limits_is_never_refused(
        self, ledger: Database, limit_store: dict[str, str]
    ) -> None:
        with open_gateway(ledger, limit_store) as gateway:
            responses = [gateway.transcribe() for _ in range(12)]

        assert [response.status_code for response in responses] == [200] * 12
        for header in RATE_LIMIT_HEADERS:
            assert header not in responses[0].headers

    def test_a_refused_request_bills_nothing(
        self, ledger: Database, limit_store: dict[str, str]
    ) -> None:
        with open_gateway(ledger, limit_store, requests_per_minute=1) as gateway:
            billed = gateway.transcribe()
            refused = gateway.transcribe()

        assert billed.status_code == 200
        assert_rate_limited(refused)
        assert "x-billing-cost-micros" not in refused.headers
        assert gateway.node.arrived == 1
        rows = usage_rows(ledger)
        assert [row.request_id for row in rows] == [billed.headers["x-request-id"]]
        with ledger.transaction() as session:
            reserved = session.exec(select(Reservation.request_id)).all()
        assert list(reserved) == [billed.headers["x-request-id"]]


class TestConcurrency:
    def test_one_over_the_cap_is_refused_while_the_others_run(
        self, ledger: Database, limit_store: dict[str, str]
    ) -> None:
        with (
            open_gateway(ledger, limit_store, concurrency_limit=2) as gateway,
            ThreadPoolExecutor(max_workers=2) as senders,
        ):
            gateway.node.hold.set()
            in_flight: list[Future[httpx.Response]] = [
                senders.submit(gateway.transcribe) for _ in range(2)
            ]
            eventually(lambda: gateway.node.arrived == 2)
            over_the_cap = gateway.transcribe()
            gateway.node.hold.clear()
            finished = [future.result() for future in in_flight]
            after = gateway.transcribe()

        assert_rate_limited(over_the_cap)
        assert over_the_cap.headers["retry-after"] == "1"
        assert "concurrent" in over_the_cap.json()["error"]["message"]
        assert [response.status_code for response in finished] == [200, 200]
        assert after.status_code == 200
        assert gateway.node.arrived == 3
        assert len(usage_rows(ledger)) == 3

    def test_the_slot_is_given_back_after_a_failure(
        self, ledger: Database, limit_store: dict[str, str]
    ) -> None:
        with open_gateway(ledger, limit_store, concurrency_limit=1) as gateway:
            gateway.node.status = 503
            upstream_failed = gateway.transcribe()
            invalid = gateway.transcribe(audio=b"not audio at all")
            gateway.node.status = 200
            served = gateway.transcribe()

        assert upstream_failed.status_code == 503
        assert upstream_failed.json()["error"]["code"] == "upstream_unavailable"
        assert invalid.status_code == 400
        assert served.status_code == 200


def errors_counted(limiter: str) -> float:
    value = REGISTRY.get_sample_value("asrgw_rate_limiter_errors_total", {"limiter": limiter})
    return value or 0.0


class TestRedisOutage:
    """A private redis-server, killed mid-test: the configured policy applies, never a 500."""

    @pytest.mark.parametrize("policy", ["open", "closed"])
    def test_policy_applies_while_redis_is_down(
        self, ledger: Database, tmp_path: Path, policy: str
    ) -> None:
        port = free_port()
        settings = {
            "redis_url": f"redis://127.0.0.1:{port}/0",
            "rate_limit_on_store_error": policy,
        }
        log = tmp_path / "redis.log"
        with redis_server(port, log) as server:
            with open_gateway(
                ledger, settings, requests_per_minute=100, concurrency_limit=5
            ) as gateway:
                before = gateway.transcribe()
                errors_before = errors_counted("concurrency") + errors_counted("requests")
                server.kill()
                server.wait()
                started = time.monotonic()
                during = [gateway.transcribe() for _ in range(4)]
                outage_seconds = time.monotonic() - started
                errors_after = errors_counted("concurrency") + errors_counted("requests")
                with redis_server(port, log):
                    after = gateway.transcribe()

        assert before.status_code == 200
        assert before.headers["x-ratelimit-remaining-requests"] == "99"
        for response in during:
            assert response.status_code != 500
            if policy == "open":
                assert response.status_code == 200
                assert "x-ratelimit-limit-requests" not in response.headers
            else:
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "rate_limiter_unavailable"
                assert response.json()["error"]["type"] == "server_error"
                assert int(response.headers["retry-after"]) > 0
        assert errors_after - errors_before >= len(during)
        # Refused at once, not after a long timeout each (the bound leaves a loaded machine
        # room; a hang would take 30 s or more per request).
        assert outage_seconds < 4 * 5.0
        # Redis back (empty: the private server keeps nothing): limits apply again.
        assert after.status_code == 200
        assert after.headers["x-ratelimit-remaining-requests"] == "99"
        expected = len(during) if policy == "open" else 0
        assert len(usage_rows(ledger)) == 1 + expected + 1


@pytest.mark.anyio
class TestMemoryWindow:
    """The embedded store's expiry pass runs on the event loop, never on a worker thread."""

    async def test_expired_entries_go_without_a_worker_thread(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The pass overridden is limits' own: were it renamed, this would fail, not go unseen.
        assert hasattr(MemoryStorage, "_MemoryStorage__expire_events")
        storage = LoopMemoryStorage()

        async def no_thread(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the rate-limit store used a worker thread")

        monkeypatch.setattr(asyncio, "to_thread", no_thread)
        assert await storage.acquire_entry("gone", limit=5, expiry=0)  # expired at once
        assert await storage.acquire_entry("kept", limit=5, expiry=60)
        assert await storage.incr("counter-gone", expiry=0) == 1
        assert await storage.incr("counter-kept", expiry=60) == 1
        assert storage.timer is not None
        await storage.timer  # the pass the hits started, on the loop
        await storage._MemoryStorage__expire_events()  # type: ignore[attr-defined]
        assert set(storage.events) == {"kept"}
        assert set(storage.storage) == {"counter-kept"}
        assert await storage.get_moving_window("kept", 5, 60) == (
            storage.events["kept"][0].atime,
            1,
        )

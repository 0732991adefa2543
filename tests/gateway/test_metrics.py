"""The gateway's /metrics: request counts by route template, status class and error code,
latency, upstream attempts per node, pool and ledger gauges read at scrape time, billing
counters equal to what the client was charged, and the bearer token.

The gateway runs in-process on a node faked with ``httpx.MockTransport``; the ledger is real.
Counters are process-wide, so every assertion compares a scrape before and after.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
import time
import uuid
import wave
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from billing.config import BillingSettings
from billing.db import Database
from billing.keys.service import authenticate
from billing.migrate import upgrade_to_head
from billing.models import Job
from billing.models.types import utcnow
from billing.reservations.service import reserve
from gateway import metrics
from gateway.app import create_app
from inference.protocol import READY_PATH, TRANSCRIBE_PATH
from tests.fixtures.factories import create_tenant_with_key
from tests.gateway.conftest import gateway_settings

FAKE_NODE = "http://fake-node:8001"
TOKEN = "metrics-token-for-tests"
MODEL_INFO = {
    "id": "pocketsphinx-en",
    "engine": "fake",
    "languages": ["en"],
    "timestamps": True,
    "word_timestamps": False,
    "hotwords": False,
    "loaded": True,
}
AUDIO_SERIAL = itertools.count(1)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def distinct_audio() -> bytes:
    """A second of near-silence unlike any other call's (a repeat would be a cache hit)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(16_000)
        audio.writeframes(b"\0\0" * 16_000)
        audio.writeframes(struct.pack("<q", next(AUDIO_SERIAL)))
    return buffer.getvalue()


class FakeNode:
    """A ready node answering transcriptions with ``status`` (or failing to connect)."""

    def __init__(self) -> None:
        self.status = 200
        self.refuse_connections = False
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == READY_PATH:
            return httpx.Response(200, json={"status": "ready", "models": [MODEL_INFO]})
        if self.refuse_connections:
            raise httpx.ConnectError("connection refused", request=request)
        if self.status != 200:
            body = {"error": {"message": "broken", "type": "server_error", "code": "internal"}}
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


class Gateway:
    def __init__(self, client: TestClient, database: Database, node: FakeNode, key: str) -> None:
        self.client = client
        self.database = database
        self.node = node
        self.key = key

    def transcribe(self, key: str | None = None, audio: bytes | None = None) -> httpx.Response:
        return self.client.post(
            "/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {key or self.key}"},
            files={"file": ("speech.wav", audio or distinct_audio(), "audio/wav")},
            data={"model": "whisper-1"},
        )

    def scrape(self) -> Samples:
        response = self.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        return parse(response.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def increase(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[Database]:
    upgrade_to_head(sqlite_url)
    database = Database(sqlite_url)
    yield database
    database.dispose()


def open_gateway(database: Database, **settings: Any) -> tuple[TestClient, FakeNode]:
    node = FakeNode()
    app = create_app(
        gateway_settings(FAKE_NODE, **{"node_max_attempts": 1, "metrics_token": TOKEN, **settings}),
        BillingSettings(database_url=database.url),
        transport=node.transport,
    )
    return TestClient(app), node


@pytest.fixture
def gateway(ledger: Database) -> Iterator[Gateway]:
    key = create_tenant_with_key(ledger, "acme", price_per_1k_tokens_micros=20_000)
    client, node = open_gateway(ledger)
    with client:
        yield Gateway(client, ledger, node, key)


class TestRequestMetrics:
    def test_a_transcription_counts_under_its_route_template(self, gateway: Gateway) -> None:
        before = gateway.scrape()
        response = gateway.transcribe()
        after = gateway.scrape()

        assert response.status_code == 200
        route = {"method": "POST", "route": "/v1/audio/transcriptions"}
        assert increase(before, after, "asrgw_requests_total", **route, status="2xx", code="none")
        assert increase(before, after, "asrgw_request_duration_seconds_count", **route) == 1
        # The scrape that read ``before`` was counted too, under its own route.
        scrape = {"method": "GET", "route": "/metrics", "status": "2xx", "code": "none"}
        assert increase(before, after, "asrgw_requests_total", **scrape) == 1

    @pytest.mark.parametrize(
        ("request_kwargs", "route", "status", "code"),
        [
            (
                {"method": "GET", "url": "/v1/models", "headers": {"Authorization": "Bearer no"}},
                "/v1/models",
                "4xx",
                "invalid_api_key",
            ),
            (
                {"method": "GET", "url": "/admin/tenants/someone"},
                "/admin/tenants/{name}",
                "4xx",
                "invalid_token",
            ),
            (
                {"method": "POST", "url": "/v1/audio/transcriptions", "data": {"model": "x"}},
                "/v1/audio/transcriptions",
                "4xx",
                "invalid_api_key",
            ),
        ],
    )
    def test_an_error_counts_under_its_envelope_code(
        self,
        gateway: Gateway,
        request_kwargs: dict[str, Any],
        route: str,
        status: str,
        code: str,
    ) -> None:
        before = gateway.scrape()
        response = gateway.client.request(**request_kwargs)
        after = gateway.scrape()

        assert response.json()["error"]["code"] == code
        labels = {"method": request_kwargs["method"], "route": route}
        assert increase(before, after, "asrgw_requests_total", **labels, status=status, code=code)

    def test_a_path_no_route_serves_counts_as_unmatched(self, gateway: Gateway) -> None:
        path = f"/no/such/{uuid.uuid4().hex}"
        before = gateway.scrape()
        response = gateway.client.get(path)
        after = gateway.scrape()

        assert response.status_code == 404
        labels = {"method": "GET", "route": "unmatched", "status": "4xx", "code": "not_found"}
        assert increase(before, after, "asrgw_requests_total", **labels) == 1
        assert not any(path in str(key) for key in after)

    def test_an_upload_refused_before_routing_keeps_its_route(self, gateway: Gateway) -> None:
        before = gateway.scrape()
        response = gateway.client.post(
            "/v1/audio/transcriptions",
            headers={**auth(gateway.key), "Content-Length": str(1 << 30)},
            content=b"x",
        )
        after = gateway.scrape()

        assert response.status_code == 413
        labels = {"method": "POST", "route": "/v1/audio/transcriptions", "status": "4xx"}
        assert increase(before, after, "asrgw_requests_total", **labels, code="file_too_large")

    def test_an_unknown_method_counts_as_other(self, gateway: Gateway) -> None:
        before = gateway.scrape()
        response = gateway.client.request("BREW", "/health/live")
        after = gateway.scrape()

        assert response.status_code == 405
        labels = {"method": "other", "route": "/health/live", "status": "4xx"}
        assert increase(before, after, "asrgw_requests_total", **labels, code="method_not_allowed")

    def test_no_request_stays_in_flight(self, gateway: Gateway) -> None:
        gateway.transcribe()
        gateway.client.get("/no/such/path")
        # The scrape itself is the one request in flight while it reads the gauge.
        assert value(gateway.scrape(), "asrgw_requests_in_flight") == 1


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class TestMetricsToken:
    def test_refused_without_the_token(self, gateway: Gateway) -> None:
        missing = gateway.client.get("/metrics")
        wrong = gateway.client.get("/metrics", headers=auth("not-the-token"))

        for response in (missing, wrong):
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "invalid_metrics_token"
            assert "asrgw_" not in response.text

    def test_open_when_no_token_is_set(self, ledger: Database) -> None:
        client, _node = open_gateway(ledger, metrics_token="")
        with client:
            response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "asrgw_requests_total" in response.text


class TestUpstreamMetrics:
    def test_each_attempt_is_timed_and_counted_per_node(self, gateway: Gateway) -> None:
        before = gateway.scrape()
        ok = gateway.transcribe()
        gateway.node.status = 503
        failed = gateway.transcribe()
        gateway.node.status = 200
        gateway.node.refuse_connections = True
        refused = gateway.transcribe()
        after = gateway.scrape()

        assert [ok.status_code, failed.status_code, refused.status_code] == [200, 503, 503]
        for outcome in ("2xx", "5xx", "connect_error"):
            counted = increase(
                before, after, "asrgw_upstream_requests_total", node=FAKE_NODE, outcome=outcome
            )
            assert counted == 1, outcome
        timed = increase(
            before,
            after,
            "asrgw_upstream_request_duration_seconds_count",
            node=FAKE_NODE,
            path=TRANSCRIBE_PATH,
        )
        assert timed == 3
        route = {"method": "POST", "route": "/v1/audio/transcriptions", "status": "5xx"}
        assert (
            increase(before, after, "asrgw_requests_total", **route, code="upstream_unavailable")
            == 2
        )

    def test_pool_gauges_follow_health_draining_and_removal(self, gateway: Gateway) -> None:
        nodes = gateway.client.app.state.nodes  # type: ignore[attr-defined]
        gateway.transcribe()
        ready = gateway.scrape()
        nodes.drain(FAKE_NODE)
        draining = gateway.scrape()
        nodes.remove(FAKE_NODE)
        removed = gateway.scrape()

        assert value(ready, "asrgw_node_healthy", node=FAKE_NODE) == 1
        assert value(ready, "asrgw_node_draining", node=FAKE_NODE) == 0
        assert value(ready, "asrgw_node_circuit_open", node=FAKE_NODE) == 0
        assert value(ready, "asrgw_node_outstanding_requests", node=FAKE_NODE) == 0
        assert value(ready, "asrgw_nodes_ready") == 1
        assert value(draining, "asrgw_node_draining", node=FAKE_NODE) == 1
        assert value(draining, "asrgw_nodes_ready") == 0
        assert value(removed, "asrgw_nodes_ready") == 0
        assert not [labels for _name, labels in removed if ("node", FAKE_NODE) in labels]

    def test_consecutive_failures_open_the_circuit(self, ledger: Database) -> None:
        key = create_tenant_with_key(ledger, "acme")
        client, node = open_gateway(ledger, node_failure_threshold=1)
        with client:
            gateway = Gateway(client, ledger, node, key)
            node.status = 503
            gateway.transcribe()
            samples = gateway.scrape()
        assert value(samples, "asrgw_node_circuit_open", node=FAKE_NODE) == 1
        assert value(samples, "asrgw_nodes_ready") == 0


class TestBillingMetrics:
    def test_counters_grow_by_what_the_client_was_charged(self, gateway: Gateway) -> None:
        audio = distinct_audio()
        before = gateway.scrape()
        miss = gateway.transcribe(audio=audio)
        hit = gateway.transcribe(audio=audio)
        after = gateway.scrape()

        assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
        for response, cached in ((miss, "false"), (hit, "true")):
            usage = response.json()["usage"]
            labels = {"model": "pocketsphinx-en", "cached": cached}
            assert increase(before, after, "asrgw_billed_tokens_total", **labels) == int(
                response.headers["x-billing-output-tokens"]
            )
            assert increase(before, after, "asrgw_output_tokens_total", **labels) == len(
                "helloworld"
            )
            assert (
                increase(before, after, "asrgw_billed_audio_seconds_total", **labels)
                == (usage["seconds"])
            )
            assert increase(
                before, after, "asrgw_billed_micros_total", **labels, currency="USD"
            ) == int(response.headers["x-billing-cost-micros"])
        assert increase(before, after, "asrgw_cache_lookups_total", result="hit") == 1
        assert increase(before, after, "asrgw_cache_lookups_total", result="miss") == 1

    def test_a_quota_refusal_is_counted(self, ledger: Database) -> None:
        key = create_tenant_with_key(ledger, "capped", monthly_token_quota=1)
        client, node = open_gateway(ledger)
        with client:
            gateway = Gateway(client, ledger, node, key)
            before = gateway.scrape()
            refused = gateway.transcribe()
            after = gateway.scrape()

        assert refused.status_code == 402
        assert increase(before, after, "asrgw_quota_rejections_total") == 1
        route = {"method": "POST", "route": "/v1/audio/transcriptions", "status": "4xx"}
        assert (
            increase(before, after, "asrgw_requests_total", **route, code="insufficient_quota") == 1
        )


def add_job(database: Database, key: str, state: str) -> None:
    with database.transaction() as session:
        caller = authenticate(session, key)
        now = utcnow()
        session.add(
            Job(
                id=f"job_{uuid.uuid4().hex}",
                tenant_id=caller.tenant_id,
                api_key_id=caller.key_id,
                state=state,
                caller=caller.model_dump_json(),
                model="pocketsphinx-en",
                language="auto",
                response_format="json",
                filename="a.wav",
                content_type="audio/wav",
                audio_md5="0" * 32,
                audio_bytes=1,
                audio_ms=1_000,
                fingerprint="0" * 64,
                available_at=now,
                deadline_at=now + timedelta(hours=1),
            )
        )


class TestLedgerGauges:
    def test_reservations_open_and_jobs_by_state_come_from_the_ledger(
        self, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with database.transaction() as session:
            caller = authenticate(session, key)
            for _ in range(2):
                reserve(session, f"req_{uuid.uuid4().hex}", caller, 1_000, ttl=timedelta(hours=1))
        for state in ("queued", "queued", "processing", "completed", "failed", "cancelled"):
            add_job(database, key, state)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics.LedgerCollector(database))
        samples = parse(generate_latest(registry).decode())

        assert value(samples, "asrgw_reservations_open") == 2
        assert value(samples, "asrgw_jobs", state="queued") == 2
        assert value(samples, "asrgw_jobs", state="processing") == 1
        # Finished jobs only grow: they are not a gauge's business.
        assert {dict(labels).get("state") for name, labels in samples if name == "asrgw_jobs"} == {
            "queued",
            "processing",
        }

    def test_an_unreadable_ledger_leaves_its_gauges_out(self, tmp_path: Path) -> None:
        # A file that is not a database: every query fails.
        path = tmp_path / "not-a-database.db"
        path.write_bytes(json.dumps({"not": "sqlite"}).encode() * 200)
        database = Database(f"sqlite:///{path}")
        errors_before = metrics.LEDGER_GAUGE_ERRORS._value.get()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics.LedgerCollector(database))
        try:
            samples = parse(generate_latest(registry).decode())
        finally:
            database.dispose()

        assert samples == {}
        assert metrics.LEDGER_GAUGE_ERRORS._value.get() == errors_before + 1


class TestJobMetrics:
    """Asynchronous jobs are billed by the job workers, and refused at submission."""

    def open_jobs_gateway(self, ledger: Database, tmp_path: Path, **plan: Any) -> Gateway:
        key = create_tenant_with_key(ledger, "acme", **plan)
        client, node = open_gateway(
            ledger, job_poll_seconds=0.05, job_storage_dir=str(tmp_path / "job-audio")
        )
        return Gateway(client, ledger, node, key)

    def submit(self, gateway: Gateway) -> httpx.Response:
        return gateway.client.post(
            "/v1/jobs",
            headers=auth(gateway.key),
            files={"file": ("speech.wav", distinct_audio(), "audio/wav")},
            data={"model": "whisper-1"},
        )

    def test_a_completed_job_counts_what_it_was_charged(
        self, ledger: Database, tmp_path: Path
    ) -> None:
        gateway = self.open_jobs_gateway(ledger, tmp_path)
        with gateway.client:
            before = gateway.scrape()
            submitted = self.submit(gateway)
            assert submitted.status_code in {200, 201, 202}, submitted.text
            job = wait_for_job(gateway, submitted.json()["id"])
            after = gateway.scrape()

        assert job["status"] == "completed"
        labels = {"model": "pocketsphinx-en", "cached": "false"}
        tokens = job["usage"]["output_tokens"]
        assert increase(before, after, "asrgw_billed_tokens_total", **labels) == tokens
        assert increase(
            before, after, "asrgw_billed_micros_total", **labels, currency="USD"
        ) == int(job["usage"]["cost_micros"])

    def test_a_job_refused_for_quota_is_counted(self, ledger: Database, tmp_path: Path) -> None:
        gateway = self.open_jobs_gateway(ledger, tmp_path, monthly_token_quota=1)
        with gateway.client:
            before = gateway.scrape()
            refused = self.submit(gateway)
            after = gateway.scrape()

        assert refused.status_code == 402
        assert increase(before, after, "asrgw_quota_rejections_total") == 1


def wait_for_job(gateway: Gateway, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = gateway.client.get(
            f"/v1/jobs/{job_id}", headers=auth(gateway.key)
        ).json()
        if job["status"] in {"completed", "failed", "cancelled"} or time.monotonic() > deadline:
            return job
        time.sleep(0.05)

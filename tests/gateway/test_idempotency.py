"""Idempotency-Key on the request path: replays from the ledger in any format, takeovers of a
dead attempt's key under its request id, bounded waits, late settlements after a sweep, and a
client that leaves before its result is ready."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from billing.config import BillingSettings
from billing.credits.service import add_credit
from billing.db import Database
from billing.idempotency.service import Lease, claim_steps
from billing.keys.schemas import AuthenticatedKey
from billing.keys.service import authenticate
from billing.models import Reservation
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.reconcile.service import reconcile
from billing.reservations.service import reserve
from billing.reservations.sweeper import release_expired
from billing.statements import run
from gateway.app import create_app
from gateway.billed.idempotency import fingerprint_md5
from gateway.cache.keys import md5_digest
from inference.protocol import READY_PATH
from tests.e2e.crash_harness import recording
from tests.fixtures.factories import TEST_ACTOR, account, create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running, running_command
from tests.fixtures.standin_node import expected_transcript
from tests.gateway.conftest import gateway_settings
from tests.gateway.jobs.conftest import FAKE_MODEL, FAKE_NODE

TEXT = "hello from the fake node"


class GatedNode:
    """A ready node whose transcriptions wait for ``gate`` (when set up) and answer a fixed
    transcript with real-looking Whisper segment statistics only if ``statistics``."""

    def __init__(self, *, gated: bool = False, failures: int = 0) -> None:
        self.gated = gated
        self.failures = failures
        self.arrived = threading.Event()
        self.gate = threading.Event()
        self.transcriptions = 0
        self.transport = httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == READY_PATH:
            return httpx.Response(200, json={"status": "ready", "models": [FAKE_MODEL]})
        self.transcriptions += 1
        self.arrived.set()
        if self.gated:
            await anyio.to_thread.run_sync(self.gate.wait)
        if self.failures:
            self.failures -= 1
            error = {"message": "overloaded", "type": "server_error", "code": "node_overloaded"}
            return httpx.Response(503, json={"error": error}, headers={"Retry-After": "0"})
        result = {
            "text": TEXT,
            "language": "en",
            "duration": 2.0,
            "segments": [{"start": 0.0, "end": 2.0, "text": TEXT}],
            "model": "pocketsphinx-en",
            "processing_ms": 1,
        }
        return httpx.Response(200, json=result)


def client_for(node: GatedNode, database: Database, tmp_path: Path, **overrides: Any) -> TestClient:
    settings = gateway_settings(
        FAKE_NODE,
        cache_enabled=False,
        job_workers=0,
        job_storage_dir=str(tmp_path / "jobs"),
        node_max_attempts=1,
        **overrides,
    )
    app = create_app(settings, BillingSettings(database_url=database.url), transport=node.transport)
    return TestClient(app)


def post(client: TestClient, key: str, audio: bytes, **fields: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if "idempotency_key" in fields:
        headers["Idempotency-Key"] = fields.pop("idempotency_key")
    return client.post(
        "/v1/audio/transcriptions",
        headers=headers,
        files={"file": ("speech.wav", audio, "audio/wav")},
        data={"model": "whisper-1", **fields},
    )


def caller_for(database: Database, secret: str) -> AuthenticatedKey:
    with database.transaction() as session:
        return authenticate(session, secret)


def reservations(database: Database) -> list[tuple[str, str]]:
    with database.transaction() as session:
        rows = session.exec(select(Reservation)).all()
        return [(row.request_id, row.state) for row in rows]


def dead_attempt(
    database: Database, caller: AuthenticatedKey, key: str, audio: bytes, request_id: str
) -> None:
    """What a gateway SIGKILLed mid-request leaves: the key leased to it (the lease lapsed a
    second ago) and its request's reservation still open."""
    route_fingerprint = fingerprint_md5(
        md5_digest(audio),
        {
            "route": "/v1/audio/transcriptions",
            "model": "pocketsphinx-en",
            "language": "auto",
            "prompt": None,
            "word_timestamps": False,
        },
    )
    now = utcnow()
    lease = Lease(caller.tenant_id, key, "dead-token")
    with database.transaction() as session:
        dialect = session.connection().dialect.name
        steps = claim_steps(
            dialect,
            lease,
            route_fingerprint,
            request_id,
            now=now - timedelta(seconds=31),
            until=now - timedelta(seconds=1),
        )
        run(session.connection(), steps)
        reserve(session, request_id, caller, 2_000, ttl=timedelta(seconds=30))


@pytest.fixture
def audio(weather_wav: Path) -> bytes:
    return weather_wav.read_bytes()


class TestReplayFromTheLedger:
    def test_a_retry_gets_the_stored_result_in_the_format_it_asks_for(
        self, database: Database, tmp_path: Path, audio: bytes
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        node = GatedNode()
        with client_for(node, database, tmp_path) as client:
            first = post(client, key, audio, idempotency_key="k1")
            again = post(client, key, audio, idempotency_key="k1", response_format="srt")
        assert first.status_code == again.status_code == 200
        assert first.json()["text"] == TEXT
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"].startswith("application/x-subrip")
        assert again.text == f"1\n00:00:00,000 --> 00:00:02,000\n{TEXT}\n"
        for header in ("x-billing-cost-micros", "x-billing-output-tokens", "x-billing-request-id"):
            assert again.headers[header] == first.headers[header]
        assert node.transcriptions == 1
        (row,) = usage_rows(database)
        assert row.request_id == first.headers["x-billing-request-id"]
        assert row.request_id == first.headers["x-request-id"]

    def test_verbose_json_carries_no_invented_statistics(
        self, database: Database, tmp_path: Path, audio: bytes
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with client_for(GatedNode(), database, tmp_path) as client:
            body = post(client, key, audio, response_format="verbose_json").json()
        (segment,) = body["segments"]
        assert segment["text"] == TEXT
        for name in ("avg_logprob", "no_speech_prob", "compression_ratio", "temperature"):
            assert segment[name] is None
        assert segment["tokens"] is None


class TestTakeover:
    def test_a_dead_attempts_key_is_taken_over_under_its_request_id(
        self, database: Database, tmp_path: Path, audio: bytes
    ) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=100_000)
        dead_attempt(database, caller_for(database, secret), "k1", audio, "req_dead")
        held = account(database, "acme").reserved_micros
        assert held > 0
        with client_for(GatedNode(), database, tmp_path) as client:
            retried = post(client, secret, audio, idempotency_key="k1")
        assert retried.status_code == 200
        assert retried.headers["x-billing-request-id"] == "req_dead"
        # One reservation for the key, adopted and settled; one usage row.
        assert reservations(database) == [("req_dead", "settled")]
        (row,) = usage_rows(database)
        assert row.request_id == "req_dead"
        totals = account(database, "acme")
        assert (totals.reserved_micros, totals.spent_micros) == (0, row.cost_micros)

    def test_a_swept_hold_is_taken_again_for_the_retry(
        self, database: Database, tmp_path: Path, audio: bytes
    ) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=100_000)
        dead_attempt(database, caller_for(database, secret), "k1", audio, "req_dead")
        assert release_expired(database, now=utcnow() + timedelta(minutes=5)) == 1
        with client_for(GatedNode(), database, tmp_path) as client:
            retried = post(client, secret, audio, idempotency_key="k1")
        assert retried.status_code == 200
        assert reservations(database) == [("req_dead", "settled")]
        assert [row.request_id for row in usage_rows(database)] == ["req_dead"]
        assert account(database, "acme").reserved_micros == 0

    def test_a_failed_attempt_is_retried_under_the_same_request_id(
        self, database: Database, tmp_path: Path, audio: bytes
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with client_for(GatedNode(failures=1), database, tmp_path) as client:
            failed = post(client, key, audio, idempotency_key="k2")
            retried = post(client, key, audio, idempotency_key="k2")
        assert failed.status_code == 503
        assert retried.status_code == 200
        assert "idempotent-replayed" not in retried.headers
        first_id = failed.headers["x-request-id"]
        assert retried.headers["x-billing-request-id"] == first_id
        assert reservations(database) == [(first_id, "settled")]
        assert len(usage_rows(database)) == 1

    def test_a_live_attempt_makes_a_retry_wait_then_409(
        self, database: Database, tmp_path: Path, audio: bytes
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        node = GatedNode(gated=True)
        with (
            client_for(node, database, tmp_path, idempotency_wait_seconds=0.3) as client,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            first = pool.submit(post, client, key, audio, idempotency_key="k3")
            assert node.arrived.wait(60)
            waiting = post(client, key, audio, idempotency_key="k3")
            node.gate.set()
            done = first.result(timeout=60)
            after = post(client, key, audio, idempotency_key="k3")
        assert waiting.status_code == 409
        assert waiting.json()["error"]["code"] == "idempotency_request_in_progress"
        assert 1 <= int(waiting.headers["retry-after"]) <= 30
        assert done.status_code == 200
        assert after.headers["idempotent-replayed"] == "true"
        assert node.transcriptions == 1
        assert len(usage_rows(database)) == 1


class TestRefusedHold:
    def test_a_402_gives_the_key_up_and_a_retry_after_a_top_up_is_served(
        self, database: Database, tmp_path: Path, audio: bytes
    ) -> None:
        key = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=1)
        node = GatedNode()
        with client_for(node, database, tmp_path, idempotency_wait_seconds=0.3) as client:
            refused = post(client, key, audio, idempotency_key="k-402")
            with database.transaction() as session:
                add_credit(session, "acme", 1_000_000, idempotency_key="top-up", actor=TEST_ACTOR)
            # Neither a wait nor a 409: the refused attempt left the key free.
            retried = post(client, key, audio, idempotency_key="k-402")
        assert refused.status_code == 402
        assert refused.json()["error"]["code"] == "insufficient_quota"
        assert retried.status_code == 200
        assert "idempotent-replayed" not in retried.headers
        assert node.transcriptions == 1
        (row,) = usage_rows(database)
        assert row.cost_micros == int(retried.headers["x-billing-cost-micros"])
        with database.transaction() as session:
            findings = reconcile(session, billing_period(utcnow()))
        assert [f.check for f in findings if not f.ok] == []


class TestLateSettlement:
    """A forced sweep while the node is slow: the request's hold is released under it."""

    def _sweep_during_the_request(
        self, database: Database, tmp_path: Path, audio: bytes, secret: str, spend: bool
    ) -> httpx.Response:
        node = GatedNode(gated=True)
        with client_for(node, database, tmp_path) as client, ThreadPoolExecutor(1) as pool:
            slow = pool.submit(post, client, secret, audio)
            assert node.arrived.wait(60)
            assert release_expired(database, now=utcnow() + timedelta(minutes=5)) == 1
            if spend:  # another request spends what the released hold gave back
                node.gated = False
                assert post(client, secret, audio).status_code == 200
            node.gate.set()
            return slow.result(timeout=60)

    def test_it_is_billed_from_the_credit_left(
        self, database: Database, tmp_path: Path, audio: bytes
    ) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=100_000)
        response = self._sweep_during_the_request(database, tmp_path, audio, secret, False)
        assert response.status_code == 200
        (row,) = usage_rows(database)
        assert row.cost_micros == int(response.headers["x-billing-cost-micros"])
        totals = account(database, "acme")
        assert (totals.spent_micros, totals.reserved_micros) == (row.cost_micros, 0)

    def test_it_is_refused_when_the_credit_left_cannot_cover_it(
        self, database: Database, tmp_path: Path, audio: bytes
    ) -> None:
        # One token per audio second: each request costs exactly its hold; credit for one.
        secret = create_tenant_with_key(
            database, "acme", prepaid=True, credit_micros=60, max_tokens_per_audio_second=1
        )
        response = self._sweep_during_the_request(database, tmp_path, audio, secret, True)
        assert response.status_code == 402
        assert response.json()["error"]["code"] == "insufficient_quota"
        (row,) = usage_rows(database)  # the other request's only
        totals = account(database, "acme")
        assert totals.spent_micros == row.cost_micros == 60
        assert totals.available_micros == 0
        assert totals.reserved_micros == 0


@pytest.mark.e2e
class TestClientThatLeaves:
    def test_nothing_is_billed_when_the_client_is_gone_before_the_result(
        self, database: Database, tmp_path: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        audio = recording(7)
        node_port, gateway_port = free_port(), free_port()
        node_url = f"http://127.0.0.1:{node_port}"
        node_command = [
            sys.executable, "-m", "uvicorn", "tests.fixtures.standin_node:app",
            "--port", str(node_port), "--no-access-log",
        ]  # fmt: skip
        environment = {
            "BILLING_DATABASE_URL": database.url,
            "GATEWAY_NODES": node_url,
            "GATEWAY_DEFAULT_MODEL": "standin-en",
            "GATEWAY_CACHE_ENABLED": "false",
            "GATEWAY_JOB_WORKERS": "0",
            "GATEWAY_JOB_STORAGE_DIR": str(tmp_path / "jobs"),
        }
        with (
            running_command(
                node_command,
                # Long enough that the client is surely gone before the node answers.
                {"STANDIN_DELAY_MS": "8000,8000"},
                f"{node_url}/health/ready",
                tmp_path / "node.log",
            ),
            running(
                ["gateway", "--port", str(gateway_port)],
                environment,
                f"http://127.0.0.1:{gateway_port}/health/ready",
                tmp_path / "gateway.log",
            ),
            _raw_upload(gateway_port, key, audio) as connection,
        ):
            _wait_until(lambda: reservations(database) != [], "the request was never held")
            connection.close()  # the client leaves while the node still works
            _wait_until(
                lambda: [state for _, state in reservations(database)] == ["released"],
                "the hold was not given back",
            )
        assert usage_rows(database) == []
        assert expected_transcript(audio)  # the node would have answered this
        assert account(database, "acme").spent_micros == 0


@contextmanager
def _raw_upload(port: int, key: str, audio: bytes) -> Iterator[socket.socket]:
    """A transcription request written to a socket by hand, so the test decides when the
    client goes away."""
    boundary = "rawboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + audio
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        connection.sendall(head + body)
        yield connection
    finally:
        connection.close()


def _wait_until(condition: Any, message: str, timeout: float = 60) -> None:
    """A condition awaited (not a timing asserted)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)

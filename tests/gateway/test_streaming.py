"""``stream=true`` on ``POST /v1/audio/transcriptions``: Server-Sent Events as the official SDK
parses them, the ``usage`` of ``transcript.text.done`` equal to the ledger row, refusals before
anything is sent, and a stream cut short (by the client or the node) billed for exactly the
text it sent."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from billing.config import BillingSettings
from billing.db import Database
from billing.models import Reservation
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.reconcile.service import reconcile
from billing.tokens import count_tokens
from gateway.app import create_app
from inference.protocol import READY_PATH, TRANSCRIBE_STREAM_PATH
from tests.e2e.crash_harness import recording
from tests.fixtures import standin_node
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running, running_command
from tests.fixtures.standin_node import expected_transcript
from tests.gateway.conftest import gateway_settings

STANDIN = "http://standin-node:8001"
READY_MODEL = standin_node.MODEL_INFO.model_dump()


def events_of(body: str) -> list[dict[str, Any]]:
    """The ``data:`` events of an SSE body."""
    return [
        json.loads(line.removeprefix("data: "))
        for line in body.splitlines()
        if line.startswith("data: ")
    ]


def reconciled(database: Database) -> list[str]:
    with database.transaction() as session:
        findings = reconcile(session, billing_period(utcnow()))
        return [f"{f.tenant}: {f.check} {f.detail}" for f in findings if not f.ok]


def reservations(database: Database) -> list[str]:
    with database.transaction() as session:
        return [row.state for row in session.exec(select(Reservation)).all()]


def gateway_for(
    database: Database, tmp_path: Path, transport: httpx.AsyncBaseTransport, **overrides: Any
) -> TestClient:
    settings = gateway_settings(
        STANDIN,
        default_model=standin_node.MODEL,
        job_workers=0,
        job_storage_dir=str(tmp_path / "jobs"),
        node_max_attempts=1,
        **overrides,
    )
    billing = BillingSettings(database_url=database.url)
    return TestClient(create_app(settings, billing, transport=transport))


def stream(client: TestClient, key: str, audio: bytes, **fields: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if "idempotency_key" in fields:
        headers["Idempotency-Key"] = fields.pop("idempotency_key")
    return client.post(
        "/v1/audio/transcriptions",
        headers=headers,
        files={"file": ("speech.wav", audio, "audio/wav")},
        data={"model": "whisper-1", "stream": "true", **fields},
    )


class TestEvents:
    def test_deltas_then_done_with_the_ledger_rows_usage(
        self, database: Database, tmp_path: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        audio = recording(3)
        transport = httpx.ASGITransport(app=standin_node.app)
        with gateway_for(database, tmp_path, transport, cache_enabled=False) as client:
            response = stream(client, key, audio)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-cache"] == "miss"
        events = events_of(response.text)
        assert [event["type"] for event in events] == [
            "transcript.text.delta",
            "transcript.text.delta",
            "transcript.text.done",
        ]
        text = expected_transcript(audio)
        assert "".join(event["delta"] for event in events[:2]) == text
        done = events[-1]
        assert done["text"] == text
        (row,) = usage_rows(database)
        assert done["usage"]["type"] == "tokens"
        assert done["usage"]["output_tokens"] == row.billed_tokens == count_tokens(text, "char")
        assert done["usage"]["cost_micros"] == row.cost_micros
        assert account(database, "acme").reserved_micros == 0
        assert reconciled(database) == []

    def test_a_repeat_is_streamed_from_the_cache_as_one_delta(
        self, database: Database, tmp_path: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        audio = recording(4)
        transport = httpx.ASGITransport(app=standin_node.app)
        with gateway_for(database, tmp_path, transport, cache_enabled=True) as client:
            first = stream(client, key, audio)
            again = stream(client, key, audio)
        assert first.headers["x-cache"] == "miss"
        assert again.headers["x-cache"] == "hit"
        delta, done = events_of(again.text)
        assert delta == {"type": "transcript.text.delta", "delta": expected_transcript(audio)}
        assert done["text"] == expected_transcript(audio)
        miss, hit = usage_rows(database)
        assert (miss.cached, hit.cached) == (False, True)
        assert done["usage"]["cost_micros"] == hit.cost_micros
        assert reconciled(database) == []


class TestRefusedBeforeTheStream:
    def test_a_format_that_cannot_stream(self, database: Database, tmp_path: Path) -> None:
        key = create_tenant_with_key(database, "acme")
        transport = httpx.ASGITransport(app=standin_node.app)
        with gateway_for(database, tmp_path, transport) as client:
            response = stream(client, key, recording(1), response_format="srt")
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "response_format"
        assert usage_rows(database) == []
        assert reservations(database) == []

    def test_an_idempotency_key(self, database: Database, tmp_path: Path) -> None:
        key = create_tenant_with_key(database, "acme")
        transport = httpx.ASGITransport(app=standin_node.app)
        with gateway_for(database, tmp_path, transport) as client:
            response = stream(client, key, recording(1), idempotency_key="k-1")
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "Idempotency-Key"
        assert reservations(database) == []

    def test_a_worst_case_past_the_credit_is_402_as_json(
        self, database: Database, tmp_path: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=1)
        transport = httpx.ASGITransport(app=standin_node.app)
        with gateway_for(database, tmp_path, transport) as client:
            response = stream(client, key, recording(2))
        assert response.status_code == 402
        assert response.json()["error"]["code"] == "insufficient_quota"
        assert usage_rows(database) == []
        assert reservations(database) == []

    def test_no_node_is_503_as_json_and_the_hold_is_given_back(
        self, database: Database, tmp_path: Path
    ) -> None:
        def overloaded(request: httpx.Request) -> httpx.Response:
            if request.url.path == READY_PATH:
                return httpx.Response(200, json={"status": "ready", "models": [READY_MODEL]})
            error = {"message": "busy", "type": "server_error", "code": "node_overloaded"}
            return httpx.Response(503, json={"error": error}, headers={"Retry-After": "2"})

        key = create_tenant_with_key(database, "acme")
        with gateway_for(database, tmp_path, httpx.MockTransport(overloaded)) as client:
            response = stream(client, key, recording(2))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "upstream_unavailable"
        assert "retry-after" in response.headers
        assert usage_rows(database) == []
        assert reservations(database) == ["released"]


class TestCutShort:
    def test_a_node_failing_midway_bills_the_text_sent_and_ends_with_an_error(
        self, database: Database, tmp_path: Path
    ) -> None:
        async def lines() -> AsyncIterator[bytes]:
            yield b'{"type": "delta", "text": "half a"}\n'
            error = {"message": "GPU fell over", "type": "server_error", "code": "internal_error"}
            yield json.dumps({"type": "error", "error": error}).encode() + b"\n"

        def failing(request: httpx.Request) -> httpx.Response:
            if request.url.path == READY_PATH:
                return httpx.Response(200, json={"status": "ready", "models": [READY_MODEL]})
            assert request.url.path == TRANSCRIBE_STREAM_PATH
            return httpx.Response(200, content=lines())

        key = create_tenant_with_key(database, "acme")
        with gateway_for(database, tmp_path, httpx.MockTransport(failing)) as client:
            response = stream(client, key, recording(2))
        delta, failure = events_of(response.text)
        assert delta["delta"] == "half a"
        assert failure["error"]["code"] == "upstream_unavailable"
        (row,) = usage_rows(database)
        assert row.billed_tokens == count_tokens("half a", "char") == 5
        assert account(database, "acme").reserved_micros == 0
        assert reconciled(database) == []

    def test_a_connection_to_the_node_broken_midway_is_billed_the_same_way(
        self, database: Database, tmp_path: Path
    ) -> None:
        async def lines() -> AsyncIterator[bytes]:
            yield b'{"type": "delta", "text": "cut off"}\n'
            raise httpx.ReadError("connection reset by the node")

        def breaking(request: httpx.Request) -> httpx.Response:
            if request.url.path == READY_PATH:
                return httpx.Response(200, json={"status": "ready", "models": [READY_MODEL]})
            return httpx.Response(200, content=lines())

        key = create_tenant_with_key(database, "acme")
        with gateway_for(database, tmp_path, httpx.MockTransport(breaking)) as client:
            response = stream(client, key, recording(2))
        delta, failure = events_of(response.text)
        assert delta["delta"] == "cut off"
        assert failure["error"]["code"] == "upstream_unavailable"
        (row,) = usage_rows(database)
        assert row.billed_tokens == count_tokens("cut off", "char") == 6
        assert reservations(database) == ["settled"]
        assert reconciled(database) == []


class TestConcurrency:
    def test_an_open_stream_holds_its_keys_concurrent_slot_until_it_ends(
        self, database: Database, tmp_path: Path
    ) -> None:
        arrived, gate = threading.Event(), threading.Event()

        async def lines() -> AsyncIterator[bytes]:
            arrived.set()
            await anyio.to_thread.run_sync(gate.wait, abandon_on_cancel=True)
            yield b'{"type": "delta", "text": "slow"}\n'
            result = {
                "text": "slow",
                "language": "en",
                "duration": 1.0,
                "segments": [],
                "model": standin_node.MODEL,
                "processing_ms": 1,
            }
            yield json.dumps({"type": "result", "result": result}).encode() + b"\n"

        def slow(request: httpx.Request) -> httpx.Response:
            if request.url.path == READY_PATH:
                return httpx.Response(200, json={"status": "ready", "models": [READY_MODEL]})
            return httpx.Response(200, content=lines())

        key = create_tenant_with_key(database, "acme", concurrency_limit=1)
        with (
            gateway_for(database, tmp_path, httpx.MockTransport(slow)) as client,
            ThreadPoolExecutor(1) as background,
        ):
            first = background.submit(stream, client, key, recording(1))
            assert arrived.wait(30)  # the first stream is open, its route function long done
            refused = stream(client, key, recording(2))
            gate.set()
            done = first.result(timeout=60)
            after = stream(client, key, recording(3))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert done.status_code == 200
        assert events_of(done.text)[-1]["type"] == "transcript.text.done"
        assert after.status_code == 200  # the slot came back when the stream ended
        assert reconciled(database) == []


def long_speech(source: Path, repeats: int) -> bytes:
    """``source`` (a 16 kHz WAV) ``repeats`` times with a second of silence between: long
    enough for the node's VAD to cut it into several stretches."""
    with wave.open(str(source)) as clip:
        params, frames = clip.getparams(), clip.readframes(clip.getnframes())
    silence = b"\x00\x00" * params.framerate
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setparams(params)
        out.writeframes((frames + silence) * repeats)
    return buffer.getvalue()


@pytest.fixture
def gateway_process(node_url: str, database: Database, tmp_path: Path) -> Iterator[str]:
    from tests.conftest import NODE_SECRET

    port = free_port()
    environment = {
        "BILLING_DATABASE_URL": database.url,
        "GATEWAY_NODES": node_url,
        "GATEWAY_NODE_SECRET": NODE_SECRET,
        "GATEWAY_DEFAULT_MODEL": "pocketsphinx-en",
        "GATEWAY_CACHE_ENABLED": "false",
        "GATEWAY_JOB_WORKERS": "0",
        "GATEWAY_JOB_STORAGE_DIR": str(tmp_path / "jobs"),
    }
    url = f"http://127.0.0.1:{port}"
    with running(
        ["gateway", "--port", str(port)], environment, f"{url}/health/ready", tmp_path / "gw.log"
    ):
        yield url


@pytest.mark.e2e
class TestOfficialSdk:
    def test_stream_true_gives_deltas_as_the_node_decodes_and_the_rows_usage(
        self, gateway_process: str, database: Database, two_sentences_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        client = openai.OpenAI(base_url=f"{gateway_process}/v1", api_key=key, max_retries=0)
        audio = long_speech(two_sentences_wav, 6)
        events = list(
            client.audio.transcriptions.create(
                model="whisper-1", file=("speech.wav", audio), stream=True
            )
        )
        deltas = [event for event in events if event.type == "transcript.text.delta"]
        (done,) = [event for event in events if event.type == "transcript.text.done"]
        assert events[-1] is done
        assert len(deltas) >= 2  # one per stretch of speech the node decoded
        assert "".join(event.delta for event in deltas) == done.text
        assert "tomorrow morning" in done.text.lower()
        (row,) = usage_rows(database)
        assert done.usage is not None
        assert done.usage.output_tokens == row.billed_tokens == count_tokens(done.text, "char")
        assert account(database, "acme").reserved_micros == 0
        assert reconciled(database) == []


@pytest.mark.e2e
class TestClientThatLeavesMidStream:
    def test_billed_for_exactly_the_deltas_it_received(
        self, database: Database, tmp_path: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        audio = recording(5)
        gate = tmp_path / "release-the-rest"
        node_port, gateway_port = free_port(), free_port()
        node_url = f"http://127.0.0.1:{node_port}"
        node_command = [
            sys.executable, "-m", "uvicorn", "tests.fixtures.standin_node:app",
            "--port", str(node_port), "--no-access-log",
        ]  # fmt: skip
        environment = {
            "BILLING_DATABASE_URL": database.url,
            "GATEWAY_NODES": node_url,
            "GATEWAY_DEFAULT_MODEL": standin_node.MODEL,
            "GATEWAY_CACHE_ENABLED": "false",
            "GATEWAY_JOB_WORKERS": "0",
            "GATEWAY_JOB_STORAGE_DIR": str(tmp_path / "jobs"),
        }
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        with (
            running_command(
                node_command,
                {"STANDIN_STREAM_GATE": str(gate)},
                f"{node_url}/health/ready",
                tmp_path / "node.log",
            ),
            running(
                ["gateway", "--port", str(gateway_port)],
                environment,
                f"{gateway_url}/health/ready",
                tmp_path / "gateway.log",
            ),
        ):
            received = []
            with (
                httpx.Client(base_url=gateway_url, timeout=60) as client,
                client.stream(
                    "POST",
                    "/v1/audio/transcriptions",
                    headers={"Authorization": f"Bearer {key}"},
                    files={"file": ("a.wav", audio, "audio/wav")},
                    data={"model": "whisper-1", "stream": "true"},
                ) as response,
            ):
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        received.append(json.loads(line.removeprefix("data: ")))
                        break  # the client leaves after the first delta
            wait_until(lambda: reservations(database) == ["settled"], "the stream was not settled")
            gate.touch()  # the node may now finish: nothing more reaches the ledger
        (first,) = received
        assert first == {"type": "transcript.text.delta", "delta": "transcript"}
        (row,) = usage_rows(database)
        assert row.billed_tokens == count_tokens("transcript", "char") == 10
        assert account(database, "acme").reserved_micros == 0
        assert reconciled(database) == []


def wait_until(condition: Any, message: str, timeout: float = 60) -> None:
    """A condition awaited (not a timing asserted)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)

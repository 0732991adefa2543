from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from billing.config import BillingSettings
from billing.db import Database
from billing.models import Reservation
from gateway.app import create_app
from inference.protocol import READY_PATH
from tests.fixtures.audio import speak
from tests.fixtures.factories import create_tenant_with_key
from tests.gateway.conftest import Gateway, gateway_settings
from tests.inference.conftest import SENTENCES, long_speech

# Fast loops, so tests wait for work rather than for timers.
FAST_JOBS = {
    "job_poll_seconds": 0.05,
    "job_lease_seconds": 3.0,
    "job_retry_base_seconds": 0.1,
    "webhook_retry_base_seconds": 0.1,
    "webhook_retry_max_seconds": 0.5,
    "webhook_allow_private": True,
}


def jobs_settings(node_url: str, storage: Path, **overrides: Any) -> Any:
    return gateway_settings(node_url, job_storage_dir=str(storage), **{**FAST_JOBS, **overrides})


def start_gateway(node_url: str, database: Database, storage: Path, **overrides: Any) -> TestClient:
    app = create_app(
        jobs_settings(node_url, storage, **overrides),
        BillingSettings(database_url=database.url),
    )
    return TestClient(app)


@pytest.fixture
def job_storage(tmp_path: Path) -> Path:
    return tmp_path / "job-audio"


@pytest.fixture
def jobs_gateway(node_url: str, database: Database, job_storage: Path) -> Iterator[Gateway]:
    """The gateway in-process with its job workers, on a real ledger and a real node."""
    key = create_tenant_with_key(database, "acme", price_per_1k_tokens_micros=20_000)
    with start_gateway(node_url, database, job_storage) as client:
        yield Gateway(client=client, database=database, key=key)


def wait_for_status(
    client: Any, job_id: str, headers: dict[str, str], statuses: set[str], timeout: float = 120
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until the job reaches one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")
        time.sleep(0.1)


def submit(
    client: Any, key: str, audio: bytes, *, filename: str = "speech.wav", **fields: str
) -> Any:
    """POST /v1/jobs with the OpenAI form fields (``model`` defaults to whisper-1)."""
    headers = {"Authorization": f"Bearer {key}"}
    if "idempotency_key" in fields:
        headers["Idempotency-Key"] = fields.pop("idempotency_key")
    return client.post(
        "/v1/jobs",
        headers=headers,
        files={"file": (filename, audio, "audio/wav")},
        data={"model": "whisper-1", **fields},
    )


def reservation_states(database: Database) -> dict[str, str]:
    with database.transaction() as session:
        rows = session.exec(select(Reservation)).all()
        return {row.request_id: row.state for row in rows}


def stored_audio(storage: Path) -> list[str]:
    return sorted(path.name for path in storage.glob("*")) if storage.exists() else []


def audio_left_after_the_end(storage: Path, timeout: float = 30) -> list[str]:
    """The stored audio once ended jobs have let go of theirs.

    A worker deletes a job's audio just after the job ends (a gateway that dies in between
    leaves it to the maintenance loop), so a client that sees the end may look a moment early.
    """
    deadline = time.monotonic() + timeout
    while (left := stored_audio(storage)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


FAKE_NODE = "http://fake-node"
FAKE_MODEL = {
    "id": "pocketsphinx-en",
    "engine": "fake",
    "languages": ["en"],
    "timestamps": True,
    "word_timestamps": False,
    "hotwords": False,
    "loaded": True,
}


class FakeNode:
    """A ready node whose transcriptions answer ``statuses`` in turn (then 200), each after
    ``delay_seconds``; it counts what reached it."""

    def __init__(self, statuses: list[int] | None = None, delay_seconds: float = 0.0) -> None:
        self.statuses = list(statuses or [])
        self.delay_seconds = delay_seconds
        self.transcriptions = 0
        self.transport = httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == READY_PATH:
            return httpx.Response(200, json={"status": "ready", "models": [FAKE_MODEL]})
        self.transcriptions += 1
        await anyio.sleep(self.delay_seconds)
        status = self.statuses.pop(0) if self.statuses else 200
        if status != 200:
            error = {"message": "overloaded", "type": "server_error", "code": "node_overloaded"}
            return httpx.Response(status, json={"error": error}, headers={"Retry-After": "1"})
        result = {
            "text": "hello from the fake node",
            "language": "en",
            "duration": 2.0,
            "segments": [{"start": 0.0, "end": 2.0, "text": "hello from the fake node"}],
            "model": "pocketsphinx-en",
            "processing_ms": 1,
        }
        return httpx.Response(200, json=result)


def fake_node_gateway(
    node: FakeNode, database: Database, storage: Path, **overrides: Any
) -> TestClient:
    settings = jobs_settings(FAKE_NODE, storage, cache_enabled=False, **overrides)
    app = create_app(settings, BillingSettings(database_url=database.url), transport=node.transport)
    return TestClient(app)


@pytest.fixture(scope="session")
def speech_clips(speech_dir: Path) -> list[bytes]:
    """Sixteen different spoken sentences (WAV bytes)."""
    return [
        speak(text, speech_dir / f"job-sentence-{index}.wav").read_bytes()
        for index, text in enumerate(SENTENCES)
    ]


@pytest.fixture(scope="session")
def ten_minutes_wav(speech_clips: list[bytes], speech_dir: Path) -> Path:
    """Ten minutes of steady speech: sentences and pauses, 16 kHz mono PCM."""
    return long_speech(speech_clips, 600, speech_dir / "job-ten-minutes.wav")


@pytest.fixture(scope="session")
def forty_seconds_wav(speech_clips: list[bytes], speech_dir: Path) -> Path:
    return long_speech(speech_clips, 40, speech_dir / "job-forty-seconds.wav")

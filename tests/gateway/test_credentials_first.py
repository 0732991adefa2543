"""Credentials before bodies: an upload with no key or a wrong one (or, to the console, no
session) is answered 401 while its body is still held by the client, against a real uvicorn
gateway (TestClient hands the app a body only once it is whole)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from billing.config import BillingSettings
from billing.db import Database
from billing.keys.schemas import KeyScope
from billing.keys.service import create_api_key
from billing.migrate import upgrade_to_head
from gateway.app import create_app
from gateway.console.deps import SIGN_IN_FIRST
from gateway.credentials_first import API_UPLOAD_PATHS, UPLOAD_METHOD
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import TEST_ACTOR, create_tenant_with_key
from tests.fixtures.processes import free_port, running
from tests.gateway.conftest import gateway_settings
from tests.gateway.test_upload_limits import BOUNDARY, multipart_head, read_answer, wav_bytes

pytestmark = pytest.mark.e2e

# The Content-Length the client announces: far more than it sends before the answer, and
# within every route's upload limit, so that only the key can refuse it.
ANNOUNCED_BYTES = 20 * 1024 * 1024
# An answer within this long came without the body; the body is never sent before it.
ANSWER_SECONDS = 10.0


@dataclass
class Process:
    url: str
    port: int
    key: str
    usage_only_key: str


@pytest.fixture(scope="module")
def gateway_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """One ``asrgw gateway`` process on a SQLite ledger; jobs are accepted, none is worked."""
    directory = tmp_path_factory.mktemp("key-first")
    database_url = f"sqlite:///{directory / 'ledger.db'}"
    upgrade_to_head(database_url)
    database = Database(database_url)
    key = create_tenant_with_key(database, "acme")
    with database.transaction() as session:
        usage_only_key = create_api_key(
            session, "acme", name="usage", scopes=[KeyScope.usage_read], actor=TEST_ACTOR
        ).secret
    database.dispose()
    port = free_port()
    environment = {
        "BILLING_DATABASE_URL": database_url,
        "GATEWAY_NODES": f"http://127.0.0.1:{free_port()}",
        "GATEWAY_NODE_SECRET": NODE_SECRET,
        "GATEWAY_JOB_WORKERS": "0",
        "GATEWAY_JOB_STORAGE_DIR": str(directory / "job-audio"),
    }
    url = f"http://127.0.0.1:{port}"
    with running(
        ["gateway", "--port", str(port)], environment, f"{url}/health/live", directory / "gw.log"
    ):
        yield Process(url=url, port=port, key=key, usage_only_key=usage_only_key)


@dataclass
class HeldAnswer:
    status: int
    headers: dict[str, str]
    body: dict[str, object]
    body_still_held: bool


async def answer_while_body_held(port: int, path: str, credentials: str) -> HeldAnswer:
    """Send the head and the first chunk of a 20 MiB multipart upload, hold the rest until the
    answer has arrived, then release it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    release = asyncio.Event()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{credentials}"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {ANNOUNCED_BYTES}\r\n\r\n"
    ).encode()

    async def send_body() -> None:
        writer.write(head + multipart_head() + b"\x01" * 64 * 1024)
        await writer.drain()
        await release.wait()
        with contextlib.suppress(ConnectionError):
            writer.write(b"\x01" * 64 * 1024)
            await writer.drain()

    sending = asyncio.create_task(send_body())
    try:
        status, headers, body = await asyncio.wait_for(read_answer(reader), ANSWER_SECONDS)
        held = not release.is_set() and not sending.done()
    finally:
        release.set()
        with contextlib.suppress(ConnectionError):
            await sending
        writer.close()
    return HeldAnswer(status, headers, json.loads(body), held)


def held(process: Process, path: str, credentials: str = "") -> HeldAnswer:
    return asyncio.run(answer_while_body_held(process.port, path, credentials))


def assert_refused_unread(
    answer: HeldAnswer, message: str, *, code: str = "invalid_api_key"
) -> None:
    assert answer.body_still_held
    assert answer.status == 401
    assert answer.body["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": code,
    }
    assert answer.headers["x-request-id"].startswith("req_")
    assert answer.headers["connection"] == "close"


NO_KEY = (
    "You didn't provide an API key. Provide it in an Authorization header using Bearer auth "
    "(Authorization: Bearer YOUR_KEY) or in an X-API-Key header."
)
UNKNOWN_KEY = "Incorrect API key provided."


class TestRefusedBeforeTheBody:
    @pytest.mark.parametrize("path", sorted(API_UPLOAD_PATHS))
    def test_no_key(self, gateway_process: Process, path: str) -> None:
        assert_refused_unread(held(gateway_process, path), NO_KEY)

    def test_an_unknown_bearer_key(self, gateway_process: Process) -> None:
        answer = held(
            gateway_process, "/v1/jobs", "Authorization: Bearer sk-asrgw-abcd1234.nope\r\n"
        )
        assert_refused_unread(answer, UNKNOWN_KEY)

    def test_an_unknown_x_api_key(self, gateway_process: Process) -> None:
        answer = held(gateway_process, "/asr", "X-API-Key: not-a-key\r\n")
        assert_refused_unread(answer, UNKNOWN_KEY)

    def test_another_scheme_counts_as_no_key(self, gateway_process: Process) -> None:
        credentials = f"Authorization: Basic {gateway_process.key}\r\n"
        assert_refused_unread(
            held(gateway_process, "/v1/audio/transcriptions", credentials), NO_KEY
        )


class TestConsoleUploads:
    def test_no_session(self, gateway_process: Process) -> None:
        answer = held(gateway_process, "/console/portal/playground")
        assert_refused_unread(answer, SIGN_IN_FIRST, code="console_sign_in_required")

    def test_an_unknown_session(self, gateway_process: Process) -> None:
        credentials = "Cookie: asrgw_console_session=not-a-session\r\n"
        answer = held(gateway_process, "/console/portal/playground", credentials)
        assert_refused_unread(answer, SIGN_IN_FIRST, code="console_sign_in_required")


class TestValidKeys:
    def test_a_valid_key_still_uploads(self, gateway_process: Process) -> None:
        response = httpx.post(
            f"{gateway_process.url}/v1/jobs",
            headers={"Authorization": f"Bearer {gateway_process.key}"},
            files={"file": ("tone.wav", wav_bytes(1.0), "audio/wav")},
            data={"model": "whisper-1"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "queued"

    def test_the_route_still_judges_the_scope(self, gateway_process: Process) -> None:
        response = httpx.post(
            f"{gateway_process.url}/v1/jobs",
            headers={"X-API-Key": gateway_process.usage_only_key},
            files={"file": ("tone.wav", wav_bytes(1.0), "audio/wav")},
            data={"model": "whisper-1"},
            timeout=30,
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"


def test_a_ledger_that_cannot_be_read_is_503_before_the_body(tmp_path: Path) -> None:
    """The key cannot be looked up while another process holds SQLite's write lock."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_to_head(url)
    database = Database(url)
    key = create_tenant_with_key(database, "acme")
    database.dispose()
    settings = gateway_settings("http://127.0.0.1:9", job_workers=0)
    billing = BillingSettings(database_url=url, sqlite_busy_timeout_seconds=0.2)
    other_writer = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        with TestClient(create_app(settings, billing)) as client:
            other_writer.execute("BEGIN IMMEDIATE")
            response = client.post("/v1/jobs", headers={"X-API-Key": key}, content=b"never parsed")
            other_writer.execute("ROLLBACK")
    finally:
        other_writer.close()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ledger_unavailable"
    assert response.headers["retry-after"] == "1"
    assert response.headers["connection"] == "close"


def test_every_route_taking_a_body_and_a_key_is_guarded() -> None:
    """A route added later with a body and an API key must be in ``API_UPLOAD_PATHS``."""
    app = create_app(gateway_settings("http://127.0.0.1:9"), BillingSettings())
    document = app.openapi()
    keyed_bodies = {
        path
        for path, operations in document["paths"].items()
        for operation in operations.values()
        if "requestBody" in operation and {"ApiKey": []} in operation.get("security", [])
    }
    assert keyed_bodies == set(API_UPLOAD_PATHS)
    assert all(
        set(document["paths"][path]) - {"get", "delete"} == {UPLOAD_METHOD.lower()}
        for path in API_UPLOAD_PATHS
    )

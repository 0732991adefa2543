"""Upload limits while the body streams, against a real uvicorn gateway (TestClient reads the
whole body before the app sees any of it), and the synchronous audio duration limit."""

from __future__ import annotations

import asyncio
import io
import json
import math
import socket
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select
from starlette.types import Message, Receive, Scope, Send

from billing.config import BillingSettings
from billing.db import Database
from billing.migrate import upgrade_to_head
from billing.models import Reservation
from gateway.app import create_app
from gateway.upload_limit import MULTIPART_OVERHEAD_BYTES, UploadLimitMiddleware
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running
from tests.gateway.conftest import gateway_settings

pytestmark = pytest.mark.e2e

LIMIT = 256 * 1024
CAP = LIMIT + MULTIPART_OVERHEAD_BYTES
BOUNDARY = "upload-limit-test-boundary"
CHUNK = 16 * 1024
# However the client's and the server's socket buffers fill, an answer within this long means
# the server did not wait for a body that never ends.
ANSWER_SECONDS = 10.0
# What may sit in the client's send buffer, the server's receive buffer and uvicorn's read
# buffer when the answer leaves: far less than the bodies offered here.
SOCKET_BUFFER_SLACK = 2 * 1024 * 1024


@dataclass
class Process:
    url: str
    port: int
    key: str
    database: Database


@pytest.fixture(scope="module")
def gateway_process(node_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """One ``asrgw gateway`` process with a 256 KiB upload limit, on a SQLite ledger."""
    directory = tmp_path_factory.mktemp("upload-limits")
    database_url = f"sqlite:///{directory / 'ledger.db'}"
    upgrade_to_head(database_url)
    database = Database(database_url)
    key = create_tenant_with_key(database, "acme")
    port = free_port()
    environment = {
        "BILLING_DATABASE_URL": database_url,
        "GATEWAY_NODES": node_url,
        "GATEWAY_NODE_SECRET": NODE_SECRET,
        "GATEWAY_MAX_UPLOAD_BYTES": str(LIMIT),
    }
    url = f"http://127.0.0.1:{port}"
    with running(
        ["gateway", "--port", str(port)], environment, f"{url}/health/live", directory / "gw.log"
    ):
        yield Process(url=url, port=port, key=key, database=database)
    database.dispose()


def wav_bytes(seconds: float, *, rate: int = 16_000, channels: int = 1) -> bytes:
    """A real wav of a quiet tone (the node hears nothing in it)."""
    frames = int(seconds * rate)
    samples = (round(200 * math.sin(i / 8)) for i in range(frames))
    pcm = b"".join(struct.pack("<h", sample) * channels for sample in samples)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    return buffer.getvalue()


def multipart_head(filename: str = "speech.wav") -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="model"\r\n\r\n'
        "whisper-1\r\n"
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()


def multipart_tail() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


def request_head(process: Process, extra: str) -> bytes:
    return (
        "POST /v1/audio/transcriptions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{process.port}\r\n"
        f"Authorization: Bearer {process.key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"{extra}\r\n"
    ).encode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    body_bytes_sent: int  # by the client when the answer arrived


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


async def send_until_answered(head: bytes, body_chunks: Iterator[bytes], port: int) -> Answer:
    """Write the request chunk by chunk while reading the answer, the way a browser or a
    proxy does; stop writing the moment an answer arrives (or the body runs out)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # A small send buffer keeps what the client has sent close to what the server has read.
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    answer = asyncio.ensure_future(read_answer(reader))
    sent = 0
    try:
        writer.write(head)
        for chunk in body_chunks:
            writer.write(chunk)
            drained = asyncio.ensure_future(writer.drain())
            await asyncio.wait({drained, answer}, return_when=asyncio.FIRST_COMPLETED)
            if answer.done():
                drained.cancel()
                break
            try:
                drained.result()
            except ConnectionError:
                break
            sent += len(chunk)
        status, headers, body = await asyncio.wait_for(answer, ANSWER_SECONDS)
        return Answer(status, headers, body, sent)
    finally:
        answer.cancel()
        writer.close()


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def endless_chunked_upload(stop_after: int) -> Iterator[bytes]:
    """A multipart upload in chunked encoding whose file does not end before ``stop_after``
    bytes."""
    produced = 0
    piece = chunked(multipart_head())
    while produced < stop_after:
        yield piece
        produced += len(piece)
        piece = chunked(b"\x01" * CHUNK)


def assert_file_too_large(status: int, headers: dict[str, str], body: dict[str, object]) -> None:
    assert status == 413
    assert body == {
        "error": {
            "message": f"The uploaded file exceeds the limit of {LIMIT} bytes.",
            "type": "invalid_request_error",
            "param": "file",
            "code": "file_too_large",
        }
    }
    assert headers["x-request-id"].startswith("req_")
    assert headers["connection"] == "close"


class TestStreamingUploadLimit:
    def test_chunked_upload_is_refused_once_it_passes_the_limit(
        self, gateway_process: Process
    ) -> None:
        rows_before = len(usage_rows(gateway_process.database))
        stop_after = 64 * 1024 * 1024
        answer = asyncio.run(
            send_until_answered(
                request_head(gateway_process, "Transfer-Encoding: chunked\r\n"),
                endless_chunked_upload(stop_after),
                gateway_process.port,
            )
        )
        assert_file_too_large(answer.status, answer.headers, json.loads(answer.body))
        # Answered while the client still had more than 63 MiB to send.
        assert answer.body_bytes_sent < CAP + SOCKET_BUFFER_SLACK
        assert len(usage_rows(gateway_process.database)) == rows_before

    def test_httpx_streaming_far_more_gets_the_413_without_sending_it_all(
        self, gateway_process: Process
    ) -> None:
        """The usual client writes the whole body before reading: the server stops reading,
        closes, and the client still gets the 413 instead of a broken connection."""
        total = 64 * 1024 * 1024
        consumed = 0

        def upload() -> Iterator[bytes]:
            nonlocal consumed
            head = multipart_head()
            consumed += len(head)
            yield head
            while consumed < total:
                consumed += CHUNK
                yield b"\x01" * CHUNK

        response = httpx.post(
            f"{gateway_process.url}/v1/audio/transcriptions",
            headers={
                "Authorization": f"Bearer {gateway_process.key}",
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            },
            content=upload(),
            timeout=ANSWER_SECONDS,
        )
        assert "content-length" not in response.request.headers
        assert_file_too_large(response.status_code, dict(response.headers), response.json())
        # The client stopped when its writes failed: socket buffers hold a few MiB at most.
        assert consumed < total / 4

    def test_a_lying_small_content_length_bills_nothing(self, gateway_process: Process) -> None:
        rows_before = len(usage_rows(gateway_process.database))
        body = multipart_head() + b"\x01" * (4 * LIMIT) + multipart_tail()
        answer = asyncio.run(
            send_until_answered(
                request_head(gateway_process, "Content-Length: 1024\r\n"),
                iter([body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]),
                gateway_process.port,
            )
        )
        # The server hands the application the 1 KiB it was promised (a truncated form), and the
        # bytes after it are no request: uvicorn answers 400 and closes the connection.
        assert answer.status == 400
        assert len(usage_rows(gateway_process.database)) == rows_before
        assert httpx.get(f"{gateway_process.url}/health/live").status_code == 200

    def test_an_upload_just_under_the_limit_passes_chunked(self, gateway_process: Process) -> None:
        rows_before = len(usage_rows(gateway_process.database))
        # 48 kHz stereo: just under 256 KiB is only 1.3 s of audio.
        audio = wav_bytes((LIMIT - 1024 - 44) / (48_000 * 4), rate=48_000, channels=2)
        assert LIMIT - 2048 < len(audio) <= LIMIT
        body = multipart_head() + audio + multipart_tail()

        def upload() -> Iterator[bytes]:
            for start in range(0, len(body), CHUNK):
                yield body[start : start + CHUNK]

        response = httpx.post(
            f"{gateway_process.url}/v1/audio/transcriptions",
            headers={
                "Authorization": f"Bearer {gateway_process.key}",
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            },
            content=upload(),
            timeout=60,
        )
        assert "content-length" not in response.request.headers
        assert response.status_code == 200, response.text
        rows = usage_rows(gateway_process.database)
        assert len(rows) == rows_before + 1
        assert rows[-1].request_id == response.headers["x-request-id"]

    def test_a_declared_length_over_the_cap_is_refused_before_the_body(
        self, gateway_process: Process
    ) -> None:
        answer = asyncio.run(
            send_until_answered(
                request_head(gateway_process, f"Content-Length: {CAP + 1}\r\n"),
                iter([]),
                gateway_process.port,
            )
        )
        assert_file_too_large(answer.status, answer.headers, json.loads(answer.body))
        assert answer.body_bytes_sent == 0


class TestMiddlewareCountsWhatArrives:
    """Behind an ASGI server that does not hold a body to its ``Content-Length`` (uvicorn does),
    the count is what protects the gateway: a small stated length lets no large body through."""

    @staticmethod
    def run(
        path: str, body_bytes: int, path_limits: dict[str, int] | None = None
    ) -> tuple[list[Message], int]:
        """Offer ``body_bytes`` under a stated length of 100; what was sent, and what the
        application read."""
        read_by_app = 0
        offered = 0
        sent: list[Message] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal read_by_app
            while True:
                message = await receive()
                read_by_app += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"read"})

        async def receive() -> Message:
            nonlocal offered
            chunk = min(CHUNK, body_bytes - offered)
            offered += chunk
            return {
                "type": "http.request",
                "body": b"\x01" * chunk,
                "more_body": offered < body_bytes,
            }

        async def send(message: Message) -> None:
            sent.append(message)

        scope: Scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": [(b"content-length", b"100"), (b"content-type", b"multipart/form-data")],
        }
        middleware = UploadLimitMiddleware(app, max_upload_bytes=LIMIT, path_limits=path_limits)
        asyncio.run(middleware(scope, receive, send))
        return sent, read_by_app

    def test_a_lying_content_length_is_refused_by_count(self) -> None:
        sent, read_by_app = self.run("/v1/audio/transcriptions", 64 * LIMIT)
        assert [message.get("status") for message in sent] == [413, None]
        error = json.loads(sent[1]["body"])["error"]
        assert error["code"] == "file_too_large"
        assert str(LIMIT) in error["message"]
        assert read_by_app <= CAP

    def test_a_path_may_have_a_larger_limit(self) -> None:
        limits = {"/v1/jobs": 4 * LIMIT}
        sent, read_by_app = self.run("/v1/jobs", 3 * LIMIT, limits)
        assert [message.get("status") for message in sent] == [200, None]
        assert read_by_app == 3 * LIMIT
        sent, _ = self.run("/v1/jobs", 5 * LIMIT, limits)
        assert str(4 * LIMIT) in json.loads(sent[1]["body"])["error"]["message"]
        sent, _ = self.run("/v1/audio/transcriptions", 3 * LIMIT, limits)
        assert sent[0]["status"] == 413


def long_wav(seconds: float) -> bytes:
    """Long but small: 4 kHz, 8-bit silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(4_000)
        writer.writeframes(b"\x80" * int(seconds * 4_000))
    return buffer.getvalue()


class TestSyncAudioDuration:
    def test_five_minutes_and_a_second_is_refused_before_anything_is_reserved(
        self, node_url: str, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        app = create_app(gateway_settings(node_url), BillingSettings(database_url=database.url))
        with TestClient(app) as client:
            response = client.post(
                "/v1/audio/transcriptions",
                headers={"Authorization": f"Bearer {key}"},
                files={"file": ("long.wav", long_wav(301), "audio/wav")},
                data={"model": "whisper-1"},
            )
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["code"] == "audio_too_long"
        assert error["param"] == "file"
        assert "POST /v1/jobs" in error["message"]
        assert "more than 300 seconds long" in error["message"]
        assert "accept at most 300 seconds" in error["message"]
        assert "x-billing-cost-micros" not in response.headers
        assert usage_rows(database) == []
        with database.transaction() as session:
            assert session.exec(select(Reservation)).all() == []

    def test_the_limit_is_a_setting(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        audio = weather_wav.read_bytes()

        def transcribe(limit_seconds: float) -> httpx.Response:
            settings = gateway_settings(node_url, max_sync_audio_seconds=limit_seconds)
            app = create_app(settings, BillingSettings(database_url=database.url))
            with TestClient(app) as client:
                return client.post(
                    "/v1/audio/transcriptions",
                    headers={"Authorization": f"Bearer {key}"},
                    files={"file": ("speech.wav", audio, "audio/wav")},
                    data={"model": "whisper-1"},
                )

        refused = transcribe(0.5)
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "audio_too_long"
        assert usage_rows(database) == []
        accepted = transcribe(30)
        assert accepted.status_code == 200
        assert "weather" in accepted.json()["text"]
        assert len(usage_rows(database)) == 1

"""The streamed money sequence (``gateway.billed.stream``) under clients and nodes that do not
behave: a cached answer is charged before its first byte; text is billed only once the client
was sent it (FunASR ``offline`` chunks included); a node stream that breaks mid-turn ends the
turn, not the session; a client that leaves while its items wait is noticed at once; a ledger
that cannot be reached fails the item, not the session. Each on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
import threading
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from billing.config import BillingSettings
from billing.db import Database
from billing.migrate import upgrade_to_head
from billing.tokens import count_tokens
from gateway.app import create_app
from inference.protocol import READY_PATH, ModelInfo
from tests.fixtures import standin_node
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port
from tests.gateway.conftest import gateway_settings
from tests.gateway.test_funasr_protocol import first_message, until_final
from tests.gateway.test_realtime import (
    RATE,
    URL,
    appends,
    events_until,
    of_type,
    reservations,
    unreconciled,
    wait_until,
)

NODE = "http://standin"
NODE_TEXT = "late words"
FUNASR_RATE = 16_000
ONLINE_MODEL = "tiny-online"


def wav_of(seconds: float, seed: int) -> bytes:
    frames = np.random.default_rng(seed).integers(-8000, 8000, int(16_000 * seconds))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(frames.astype("<i2").tobytes())
    return buffer.getvalue()


def tone(seconds: float, rate: int) -> bytes:
    """Loud enough for the gateway's energy VAD to hear a turn."""
    return (np.sin(np.arange(int(rate * seconds)) / 10) * 8000).astype("<i2").tobytes()


def quiet(seconds: float, rate: int) -> bytes:
    return b"\x00\x00" * int(rate * seconds)


class CountingNode:
    """A ready node answering ``NODE_TEXT``: the first ``free`` transcriptions at once, the
    rest once ``gate`` is set. It counts what reached it."""

    def __init__(self, free: int = 1_000, models: list[dict[str, Any]] | None = None) -> None:
        self.free = free
        self.models = models or [standin_node.MODEL_INFO.model_dump()]
        self.arrivals = 0
        self.gate = threading.Event()
        self.transport = httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == READY_PATH:
            return httpx.Response(200, json={"status": "ready", "models": self.models})
        self.arrivals += 1
        if self.arrivals > self.free:
            await anyio.to_thread.run_sync(self.gate.wait, abandon_on_cancel=True)
        result = {
            "text": NODE_TEXT,
            "language": "en",
            "duration": 1.0,
            "segments": [{"start": 0.0, "end": 1.0, "text": NODE_TEXT}],
            "model": standin_node.MODEL,
            "processing_ms": 1,
        }
        return httpx.Response(200, json=result)


def client_of(database: Database, node: CountingNode, **options: Any) -> TestClient:
    busy_timeout = options.pop("sqlite_busy_timeout_seconds", None)
    settings = gateway_settings(
        options.pop("nodes", NODE),
        default_model=standin_node.MODEL,
        cache_enabled=False,
        job_workers=0,
        **options,
    )
    billing = BillingSettings(database_url=database.url)
    if busy_timeout is not None:
        billing = BillingSettings(
            database_url=database.url, sqlite_busy_timeout_seconds=busy_timeout
        )
    return TestClient(create_app(settings, billing, transport=node.transport))


def until_closed(ws: Any) -> tuple[list[dict[str, Any]], int]:
    """Every message until the server closes, and its close code."""
    messages: list[dict[str, Any]] = []
    while True:
        try:
            messages.append(json.loads(ws.receive_text()))
        except WebSocketDisconnect as closed:
            return messages, closed.code


def send_pcm(ws: Any, pcm: bytes) -> None:
    """In 60 ms frames, as FunASR's own client sends them."""
    for start in range(0, len(pcm), 1_920):
        ws.send_bytes(pcm[start : start + 1_920])


def commit_by_hand(ws: Any, seconds: float = 1.0) -> None:
    for event in appends(tone(seconds, RATE)):
        ws.send_text(json.dumps(event))
    ws.send_text(json.dumps({"type": "input_audio_buffer.commit"}))


def manual_session(ws: Any) -> None:
    ws.receive_text()  # transcription_session.created
    ws.send_text(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
    events_until(ws, "session.updated")


class TestCachedAnswerIsChargedFirst:
    def test_a_cached_stream_the_credit_no_longer_covers_is_402_before_any_byte(
        self, database: Database, tmp_path: Path
    ) -> None:
        # 1 s of audio bounds a request at 25 tokens (500 micros at 20 micros a token); the
        # stand-in's transcript is 22 tokens (440 micros), and a cache hit costs as much.
        key = create_tenant_with_key(
            database,
            "acme",
            prepaid=True,
            credit_micros=800,
            max_tokens_per_audio_second=25,
            cache_hit_price_bp=10_000,
        )
        audio = wav_of(1.0, seed=1)
        settings = gateway_settings(
            NODE,
            default_model=standin_node.MODEL,
            cache_enabled=True,
            job_workers=0,
            job_storage_dir=str(tmp_path / "jobs"),
        )
        app = create_app(
            settings,
            BillingSettings(database_url=database.url),
            transport=httpx.ASGITransport(app=standin_node.app),
        )
        headers = {"Authorization": f"Bearer {key}"}
        files = {"file": ("speech.wav", audio, "audio/wav")}
        with TestClient(app) as client:
            first = client.post(
                "/v1/audio/transcriptions",
                headers=headers,
                files=files,
                data={"model": "whisper-1"},
            )
            streamed = [
                client.post(
                    "/v1/audio/transcriptions",
                    headers=headers,
                    files=files,
                    data={"model": "whisper-1", "stream": "true"},
                )
                for _ in range(2)
            ]
        assert first.status_code == 200
        assert account(database, "acme").credit_micros - 440 == 360  # less than a hit costs
        for response in streamed:
            # No transcript as a delta, no error event after it: a plain 402, every time.
            assert response.status_code == 402
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["code"] == "insufficient_quota"
            assert "transcript" not in response.text
        (row,) = usage_rows(database)
        assert row.cached is False
        assert unreconciled(database) == []


class TestFunasrOffline:
    """``offline`` mode sends the text once, at the end: each chunk is billed when the message
    carrying its text was sent, or not at all."""

    def options(self) -> dict[str, Any]:
        return {"realtime_max_item_seconds": 1.0}

    def test_a_later_chunk_refused_sends_and_bills_the_chunks_before_it(
        self, database: Database
    ) -> None:
        # A chunk of 1 s holds 50 tokens (1,000 micros): the credit holds one chunk, not two.
        key = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=1_500)
        node = CountingNode()
        with (
            client_of(database, node, **self.options()) as client,
            client.websocket_connect("/funasr", headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.send_text(first_message("offline"))
            send_pcm(ws, tone(2.5, FUNASR_RATE))
            ws.send_text(json.dumps({"is_speaking": False}))
            messages, close_code = until_closed(ws)
        assert close_code == 1008
        texts = [m for m in messages if "text" in m]
        errors = [m["error"]["code"] for m in messages if "error" in m]
        assert texts == [
            {"wav_name": "lecture", "mode": "offline", "text": NODE_TEXT, "is_final": True}
        ]
        assert errors == ["insufficient_quota"]
        # Billed: exactly the text that was sent, one chunk; the refused chunk held nothing.
        (row,) = usage_rows(database)
        assert row.billed_tokens == count_tokens(NODE_TEXT, "char")
        assert node.arrivals == 1
        assert account(database, "acme").reserved_micros == 0
        assert unreconciled(database) == []

    def test_a_client_gone_before_the_final_message_pays_nothing(self, database: Database) -> None:
        key = create_tenant_with_key(database, "acme")
        node = CountingNode(free=1)
        with client_of(database, node, **self.options()) as client:
            with client.websocket_connect(
                "/funasr", headers={"Authorization": f"Bearer {key}"}
            ) as ws:
                ws.send_text(first_message("offline"))
                send_pcm(ws, tone(2.5, FUNASR_RATE))
                # The first chunk is transcribed (its text held for the final message), the
                # second is at the node when the client leaves.
                wait_until(lambda: node.arrivals == 2, "the second chunk never reached the node")
            wait_until(
                lambda: set(reservations(database)) == {"released"},
                "a chunk's hold was kept after its client left",
            )
            node.gate.set()
        assert usage_rows(database) == []
        assert account(database, "acme").reserved_micros == 0
        assert unreconciled(database) == []


class BreakingLiveNode:
    """A node's live endpoint (a real WebSocket server on loopback) that opens the stream,
    answers the first audio with one delta, then drops the connection; later streams end
    with no text."""

    def __init__(self) -> None:
        self.port = free_port()
        self.opened = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, connection: ServerConnection) -> None:
        await connection.recv()  # the parameters
        self.opened += 1
        await connection.send(json.dumps({"type": "ready"}))
        if self.opened == 1:
            await connection.recv()
            await connection.send(json.dumps({"type": "delta", "text": "hello"}))
            # The stream ends with no close frame, as when the node's process dies; the audio
            # still arriving is read and dropped (unread, the kernel would reset the
            # connection and the gateway could lose the delta it was sent).
            connection.transport.write_eof()
            with contextlib.suppress(ConnectionClosed):
                async for _ in connection:
                    pass
            return
        async for frame in connection:
            if isinstance(frame, str) and json.loads(frame).get("type") == "end":
                await connection.send(json.dumps({"type": "done", "text": ""}))
                return

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", self.port):
            self._ready.set()
            await self._stop.wait()

    @contextmanager
    def running(self) -> Iterator[BreakingLiveNode]:
        self._thread.start()
        assert self._ready.wait(30), "the live node did not start"
        try:
            yield self
        finally:
            assert self._loop is not None
            assert self._stop is not None
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)


class TestBrokenNodeStream:
    def test_a_live_turn_whose_node_breaks_ends_with_an_error_and_the_session_goes_on(
        self, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        online = ModelInfo(
            id=ONLINE_MODEL,
            engine="funasr",
            languages=["zh"],
            timestamps=False,
            word_timestamps=False,
            hotwords=False,
            streaming=True,
            loaded=True,
        ).model_dump()
        live = BreakingLiveNode()
        node = CountingNode(models=[standin_node.MODEL_INFO.model_dump(), online])
        speech = quiet(0.3, FUNASR_RATE) + tone(1.0, FUNASR_RATE) + quiet(1.2, FUNASR_RATE)
        with (
            live.running(),
            client_of(database, node, nodes=live.url, online_model=ONLINE_MODEL) as client,
            client.websocket_connect("/funasr", headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.send_text(first_message("2pass"))
            send_pcm(ws, speech)
            # The first turn: one partial, then the node is gone.
            partial = json.loads(ws.receive_text())
            failure = json.loads(ws.receive_text())
            # The session goes on: a second turn is answered.
            send_pcm(ws, speech)
            ws.send_text(json.dumps({"is_speaking": False}))
            rest = until_final(ws)
        assert partial == {
            "wav_name": "lecture",
            "mode": "2pass-online",
            "text": "hello",
            "is_final": False,
        }
        assert failure["error"]["code"] == "upstream_unavailable"
        assert rest[-1]["is_final"] is True
        assert [m["text"] for m in rest if m.get("mode") == "2pass-offline" and m["text"]] == [
            NODE_TEXT
        ]
        first, second = usage_rows(database)
        # The broken turn: the partial the client was sent. The second: its offline text.
        assert (first.model, first.billed_tokens) == (ONLINE_MODEL, count_tokens("hello", "char"))
        assert second.billed_tokens == count_tokens(NODE_TEXT, "char")
        assert account(database, "acme").reserved_micros == 0
        assert unreconciled(database) == []


class TestClientThatLeavesWhileItemsWait:
    def test_its_item_in_flight_is_given_back_and_the_queued_ones_never_start(
        self, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        node = CountingNode(free=0)
        with client_of(database, node) as client:
            with client.websocket_connect(URL, headers={"Authorization": f"Bearer {key}"}) as ws:
                manual_session(ws)
                # One item at the node, two waiting: the fourth commit finds the queue full.
                for _ in range(4):
                    commit_by_hand(ws)
                wait_until(lambda: node.arrivals == 1, "the first item never reached the node")
            # Still at the node, yet the client is gone: nothing of it will be sent.
            wait_until(
                lambda: reservations(database) == ["released"],
                "the hold of the item in flight was kept after its client left",
            )
            node.gate.set()
        assert node.arrivals == 1
        assert usage_rows(database) == []
        assert account(database, "acme").reserved_micros == 0


class TestLedgerOutage:
    def test_an_item_the_ledger_cannot_hold_fails_and_the_session_goes_on(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "ledger.db"
        upgrade_to_head(f"sqlite:///{path}")
        database = Database(f"sqlite:///{path}")
        key = create_tenant_with_key(database, "acme")
        node = CountingNode()
        other_writer = sqlite3.connect(path, isolation_level=None)
        try:
            with (
                client_of(database, node, sqlite_busy_timeout_seconds=0.2) as client,
                client.websocket_connect(URL, headers={"Authorization": f"Bearer {key}"}) as ws,
            ):
                manual_session(ws)
                other_writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
                commit_by_hand(ws)
                failed = of_type(
                    events_until(ws, "conversation.item.input_audio_transcription.failed"),
                    "conversation.item.input_audio_transcription.failed",
                )
                other_writer.execute("ROLLBACK")
                commit_by_hand(ws)
                completed = of_type(
                    events_until(ws, "conversation.item.input_audio_transcription.completed"),
                    "conversation.item.input_audio_transcription.completed",
                )
        finally:
            other_writer.close()
        assert failed[0]["error"]["code"] == "ledger_unavailable"
        (row,) = usage_rows(database)
        assert completed[0]["usage"]["output_tokens"] == row.billed_tokens
        assert node.arrivals == 1  # the refused item never reached the node
        assert unreconciled(database) == []
        database.dispose()

"""The realtime transcription WebSocket (``/v1/realtime?intent=transcription``): server VAD
turns over real speech into committed items, each billed as its own ledger row whose usage the
``completed`` event carries; manual commits; keys by header or subprotocol; refusals; a client
that leaves before an item's transcript is not billed for it; a hold that does not fit ends the
session with ``insufficient_quota``."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from billing.config import BillingSettings
from billing.db import Database
from billing.models import Reservation
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.reconcile.service import reconcile
from gateway.app import create_app
from inference.audio import decode_audio
from inference.protocol import READY_PATH
from tests.fixtures import standin_node
from tests.fixtures.factories import TEST_ACTOR, account, create_tenant_with_key, usage_rows
from tests.gateway.conftest import gateway_settings

URL = "/v1/realtime?intent=transcription"
RATE = 24_000
CHUNK_MS = 100


def pcm24k(wav_bytes: bytes) -> bytes:
    """A WAV as OpenAI's pcm16: 24 kHz mono 16-bit little-endian."""
    samples = decode_audio(wav_bytes)
    positions = np.arange(0, samples.size, 16_000 / RATE)
    resampled = np.interp(positions, np.arange(samples.size), samples)
    return (np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (RATE * ms // 1000)


def appends(pcm: bytes) -> list[dict[str, Any]]:
    step = RATE * 2 * CHUNK_MS // 1000
    return [
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + step]).decode()}
        for i in range(0, len(pcm), step)
    ]


def events_until(ws: Any, last: str, count: int = 1) -> list[dict[str, Any]]:
    """Server events up to the ``count``-th of type ``last``."""
    received: list[dict[str, Any]] = []
    while sum(event["type"] == last for event in received) < count:
        received.append(json.loads(ws.receive_text()))
    return received


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


def reservations(database: Database) -> list[str]:
    with database.transaction() as session:
        return [row.state for row in session.exec(select(Reservation)).all()]


def unreconciled(database: Database) -> list[str]:
    with database.transaction() as session:
        findings = reconcile(session, billing_period(utcnow()))
        return [f"{f.tenant}: {f.check} {f.detail}" for f in findings if not f.ok]


def gateway(database: Database, node: str, **options: Any) -> TestClient:
    transport = options.pop("transport", None)
    settings = gateway_settings(node, cache_enabled=False, job_workers=0, **options)
    return TestClient(
        create_app(settings, BillingSettings(database_url=database.url), transport=transport)
    )


class TestServerVad:
    def test_each_turn_is_an_item_billed_on_its_own_row(
        self, node_url: str, database: Database, two_sentences_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        speech = pcm24k(two_sentences_wav.read_bytes())
        with (
            gateway(database, node_url, default_model="pocketsphinx-en") as client,
            client.websocket_connect(URL, headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            created = json.loads(ws.receive_text())
            ws.send_text(
                json.dumps(
                    {
                        "type": "transcription_session.update",
                        "session": {
                            "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                        },
                    }
                )
            )
            for event in appends(silence(300) + speech + silence(1_000)):
                ws.send_text(json.dumps(event))
            events = events_until(
                ws, "conversation.item.input_audio_transcription.completed", count=2
            )
        assert created["type"] == "transcription_session.created"
        assert created["session"]["input_audio_format"] == "pcm16"
        assert of_type(events, "transcription_session.updated")
        started = of_type(events, "input_audio_buffer.speech_started")
        stopped = of_type(events, "input_audio_buffer.speech_stopped")
        committed = of_type(events, "input_audio_buffer.committed")
        completed = of_type(events, "conversation.item.input_audio_transcription.completed")
        deltas = of_type(events, "conversation.item.input_audio_transcription.delta")
        # The one-second pause between the sentences ends the first turn.
        assert len(started) == len(stopped) == len(committed) == 2
        assert [e["item_id"] for e in started] == [e["item_id"] for e in committed]
        assert committed[0]["previous_item_id"] is None
        assert committed[1]["previous_item_id"] == committed[0]["item_id"]
        assert started[0]["audio_start_ms"] < stopped[0]["audio_end_ms"]
        assert stopped[0]["audio_end_ms"] <= started[1]["audio_start_ms"]
        assert [e["item_id"] for e in completed] == [e["item_id"] for e in committed]
        assert [e["delta"] for e in deltas] == [e["transcript"] for e in completed]
        # The second sentence is the second item. (PocketSphinx on the shared test node once
        # heard its last word as "while earning" in a full CI run; not reproduced alone.)
        assert "call me tomorrow" in completed[1]["transcript"]
        rows = usage_rows(database)
        assert len(rows) == 2
        assert [e["usage"]["output_tokens"] for e in completed] == [r.billed_tokens for r in rows]
        assert [e["usage"]["cost_micros"] for e in completed] == [r.cost_micros for r in rows]
        assert account(database, "acme").reserved_micros == 0
        assert unreconciled(database) == []


class TestManualCommit:
    def test_a_commit_by_hand_with_the_key_in_a_subprotocol(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        protocols = ["realtime", f"openai-insecure-api-key.{key}", "openai-beta.realtime-v1"]
        with (
            gateway(database, node_url, default_model="pocketsphinx-en") as client,
            client.websocket_connect(URL, subprotocols=protocols) as ws,
        ):
            ws.receive_text()
            ws.send_text(
                json.dumps({"type": "session.update", "session": {"turn_detection": None}})
            )
            for event in appends(pcm24k(weather_wav.read_bytes())):
                ws.send_text(json.dumps(event))
            ws.send_text(json.dumps({"type": "input_audio_buffer.commit"}))
            events = events_until(ws, "conversation.item.input_audio_transcription.completed")
            accepted = ws.accepted_subprotocol
        assert accepted == "realtime"
        assert of_type(events, "session.updated")[0]["session"]["turn_detection"] is None
        assert not of_type(events, "input_audio_buffer.speech_started")
        (done,) = of_type(events, "conversation.item.input_audio_transcription.completed")
        assert "weather" in done["transcript"] or "nice today" in done["transcript"]
        (row,) = usage_rows(database)
        assert done["usage"]["output_tokens"] == row.billed_tokens


class TestRefusals:
    def test_no_key_is_refused_at_the_handshake(self, node_url: str, database: Database) -> None:
        with (
            gateway(database, node_url) as client,
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect(URL),
        ):
            pass
        assert refused.value.status_code == 401
        assert refused.value.json()["error"]["code"] == "invalid_api_key"

    def test_bad_events_get_error_events_and_the_session_goes_on(
        self, node_url: str, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with (
            gateway(database, node_url) as client,
            client.websocket_connect(URL, headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.receive_text()
            ws.send_text("not json")
            ws.send_text(json.dumps({"type": "response.create"}))
            ws.send_text(json.dumps({"type": "input_audio_buffer.commit"}))
            ws.send_text(json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}))
            ws.send_text(
                json.dumps(
                    {"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}
                )
            )
            ws.send_text(json.dumps({"type": "input_audio_buffer.clear"}))
            events = events_until(ws, "input_audio_buffer.cleared")
        codes = [event["error"]["code"] for event in of_type(events, "error")]
        assert codes == [
            "invalid_json",
            "invalid_event",
            "input_audio_buffer_commit_empty",
            "invalid_value",
            "invalid_value",
        ]
        assert usage_rows(database) == []


class GatedNode:
    """A ready node whose transcriptions wait for ``gate``."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.gate = threading.Event()
        self.transport = httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == READY_PATH:
            model = standin_node.MODEL_INFO.model_dump()
            return httpx.Response(200, json={"status": "ready", "models": [model]})
        self.arrived.set()
        await anyio.to_thread.run_sync(self.gate.wait, abandon_on_cancel=True)
        result = {
            "text": "late words",
            "language": "en",
            "duration": 1.0,
            "segments": [],
            "model": standin_node.MODEL,
            "processing_ms": 1,
        }
        return httpx.Response(200, json=result)


def commit_one_second(ws: Any) -> None:
    ws.receive_text()
    ws.send_text(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
    tone = (np.sin(np.arange(RATE) / 10) * 8000).astype("<i2").tobytes()
    for event in appends(tone):
        ws.send_text(json.dumps(event))
    ws.send_text(json.dumps({"type": "input_audio_buffer.commit"}))


def wait_until(condition: Any, message: str, timeout: float = 60) -> None:
    """A condition awaited (not a timing asserted)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


class TestMoney:
    def test_a_client_gone_before_the_transcript_is_not_billed_for_it(
        self, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        node = GatedNode()
        options = {"default_model": standin_node.MODEL, "transport": node.transport}
        with gateway(database, "http://standin", **options) as client:
            with client.websocket_connect(URL, headers={"Authorization": f"Bearer {key}"}) as ws:
                commit_one_second(ws)
                assert node.arrived.wait(30)
            # The client has left while the node works: the gateway stops waiting for it.
            wait_until(lambda: reservations(database) == ["released"], "the hold was kept")
            node.gate.set()
        assert usage_rows(database) == []
        assert account(database, "acme").spent_micros == 0

    def test_an_item_whose_hold_does_not_fit_ends_the_session_with_insufficient_quota(
        self, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=1)
        node = GatedNode()
        node.gate.set()
        options = {"default_model": standin_node.MODEL, "transport": node.transport}
        with (
            gateway(database, "http://standin", **options) as client,
            client.websocket_connect(URL, headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            commit_one_second(ws)
            events = events_until(ws, "error")
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        (error,) = of_type(events, "error")
        assert error["error"]["code"] == "insufficient_quota"
        assert closed.value.code == 1008
        assert not node.arrived.is_set()
        assert usage_rows(database) == []
        assert reservations(database) == []


class TestLimits:
    def test_a_session_holds_one_of_the_keys_concurrent_slots(
        self, node_url: str, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme", concurrency_limit=1)
        auth = {"Authorization": f"Bearer {key}"}
        with (
            gateway(database, node_url) as client,
            client.websocket_connect(URL, headers=auth) as first,
        ):
            first.receive_text()
            with (
                pytest.raises(WebSocketDenialResponse) as refused,
                client.websocket_connect(URL, headers=auth),
            ):
                pass
        assert refused.value.status_code == 429
        assert refused.value.json()["error"]["code"] == "rate_limit_exceeded"

    def test_an_idle_session_is_closed_with_an_error(
        self, node_url: str, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with (
            gateway(database, node_url, realtime_idle_timeout_seconds=0.2) as client,
            client.websocket_connect(URL, headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.receive_text()
            idle = json.loads(ws.receive_text())
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert idle["type"] == "error"
        assert idle["error"]["code"] == "idle_timeout"
        assert closed.value.code == 1000

    def test_a_session_past_its_maximum_length_is_closed_with_an_error(
        self, node_url: str, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with (
            gateway(database, node_url, realtime_max_session_seconds=0.2) as client,
            client.websocket_connect(URL, headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.receive_text()
            expired = json.loads(ws.receive_text())
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert expired["error"]["code"] == "session_expired"
        assert closed.value.code == 1000

    def test_audio_past_the_item_limit_is_committed_in_pieces(self, database: Database) -> None:
        key = create_tenant_with_key(database, "acme")
        node = GatedNode()
        node.gate.set()
        options = {
            "default_model": standin_node.MODEL,
            "transport": node.transport,
            "realtime_max_item_seconds": 1.0,
        }
        tone = (np.sin(np.arange(RATE * 5 // 2) / 10) * 8000).astype("<i2").tobytes()
        with (
            gateway(database, "http://standin", **options) as client,
            client.websocket_connect(URL, headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.receive_text()
            ws.send_text(
                json.dumps({"type": "session.update", "session": {"turn_detection": None}})
            )
            for event in appends(tone):
                ws.send_text(json.dumps(event))
            events = events_until(
                ws, "conversation.item.input_audio_transcription.completed", count=2
            )
        committed = of_type(events, "input_audio_buffer.committed")
        assert len(committed) == 2  # two full seconds; the last half second waits for more
        rows = usage_rows(database)
        assert [row.audio_ms for row in rows] == [1000, 1000]

    def test_a_turn_past_the_item_limit_goes_on_as_announced_items(
        self, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        node = GatedNode()
        node.gate.set()
        options = {
            "default_model": standin_node.MODEL,
            "transport": node.transport,
            "realtime_max_item_seconds": 1.0,
        }
        tone = (np.sin(np.arange(RATE * 5 // 2) / 10) * 8000).astype("<i2").tobytes()
        with (
            gateway(database, "http://standin", **options) as client,
            client.websocket_connect(URL, headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.receive_text()
            for event in appends(tone + silence(1_000)):
                ws.send_text(json.dumps(event))
            events = events_until(
                ws, "conversation.item.input_audio_transcription.completed", count=3
            )
        started = [e["item_id"] for e in of_type(events, "input_audio_buffer.speech_started")]
        committed = [e["item_id"] for e in of_type(events, "input_audio_buffer.committed")]
        assert len(committed) == 3  # one second, one second, and the rest of the turn
        assert started == committed
        assert len(of_type(events, "input_audio_buffer.speech_stopped")) == 1
        assert len(usage_rows(database)) == 3


class TestKeyRevocation:
    def test_the_check_finds_the_key_by_its_prefix_alone(self, database: Database) -> None:
        # A session opened with a client token holds no secret to present again.
        from billing.keys.service import authenticate, revoke_api_key
        from gateway.errors import AuthError
        from gateway.streaming.keycheck import look_up_again

        key = create_tenant_with_key(database, "acme")
        with database.transaction() as session:
            caller = authenticate(session, key)
        look_up_again(database, caller)  # valid: nothing raised
        with database.transaction() as session:
            revoke_api_key(session, key, actor=TEST_ACTOR)
        with pytest.raises(AuthError, match="revoked"):
            look_up_again(database, caller)

    # A browser's session never saw the key, only a client token minted with it: the key is
    # checked again all the same.
    @pytest.mark.parametrize("opened_with", ["key", "client_token"])
    def test_a_revoked_key_ends_its_session_and_what_was_delivered_stays_billed(
        self, database: Database, opened_with: str
    ) -> None:
        from billing.keys.service import split_key
        from gateway.admin.auth import Scope, mint_token

        key = create_tenant_with_key(database, "acme")
        node = GatedNode()
        node.gate.set()
        options = {
            "default_model": standin_node.MODEL,
            "transport": node.transport,
            # Checked again this often: the test waits for the close, not for the clock.
            "realtime_key_recheck_seconds": 0.05,
        }
        with gateway(database, "http://standin", **options) as client:
            if opened_with == "key":
                handshake: dict[str, Any] = {"headers": {"Authorization": f"Bearer {key}"}}
            else:
                minted = client.post(
                    "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {key}"}
                )
                assert minted.status_code == 200, minted.text
                secret = minted.json()["value"]
                handshake = {"subprotocols": ["realtime", f"openai-insecure-api-key.{secret}"]}
            with client.websocket_connect(URL, **handshake) as ws:
                commit_one_second(ws)
                delivered = events_until(
                    ws, "conversation.item.input_audio_transcription.completed"
                )
                admin = mint_token(
                    client.app.state.settings,  # type: ignore[attr-defined]
                    "ops@example.com",
                    [Scope.keys_write],
                    ttl_seconds=300,
                )
                revoked = client.post(
                    f"/admin/keys/{split_key(key)}/revoke",
                    headers={"Authorization": f"Bearer {admin}"},
                )
                assert revoked.status_code == 200, revoked.text
                ended = events_until(ws, "error")
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_text()
            refused = client.post(
                "/v1/audio/transcriptions",
                headers={"Authorization": f"Bearer {key}"},
                files={"file": ("a.wav", b"RIFF", "audio/wav")},
            )
        (done,) = of_type(delivered, "conversation.item.input_audio_transcription.completed")
        (error,) = of_type(ended, "error")
        assert error["error"]["code"] == "invalid_api_key"
        assert (closed.value.code, closed.value.reason) == (4401, "invalid_api_key")
        assert refused.status_code == 401
        (row,) = usage_rows(database)
        assert done["usage"]["output_tokens"] == row.billed_tokens
        assert "held" not in reservations(database)
        assert unreconciled(database) == []

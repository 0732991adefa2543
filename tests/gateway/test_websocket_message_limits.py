"""No WebSocket message larger than one item's audio: uvicorn's cap as ``asrgw gateway`` starts
it, each protocol's own check behind it, and appends cut so no item passes the limit."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from billing.config import BillingSettings
from billing.db import Database
from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.streaming.frames import (
    funasr_max_message_bytes,
    realtime_max_message_bytes,
    websocket_max_message_bytes,
)
from tests.fixtures.factories import create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running
from tests.gateway.conftest import gateway_settings

REALTIME = "/v1/realtime?intent=transcription"
RATE = 24_000


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


def append(pcm: bytes) -> str:
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    )


def gateway(database: Database, **options: Any) -> TestClient:
    # No node listens here: nothing in these tests is transcribed successfully.
    settings = gateway_settings(
        f"http://127.0.0.1:{free_port()}", cache_enabled=False, job_workers=0, **options
    )
    return TestClient(create_app(settings, BillingSettings(database_url=database.url)))


def events_until(ws: Any, last: str) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while not received or received[-1]["type"] != last:
        received.append(json.loads(ws.receive_text()))
    return received


class TestLimits:
    def test_the_server_cap_is_the_largest_legitimate_message(self) -> None:
        settings = GatewaySettings(realtime_max_item_seconds=30)
        # One item of 24 kHz pcm16 as base64, plus its JSON; one item of 48 kHz pcm16.
        assert realtime_max_message_bytes(settings) == 1_920_000 + 4096
        assert funasr_max_message_bytes(settings, 48_000) == 2_880_000
        assert websocket_max_message_bytes(settings) == 2_880_000  # not uvicorn's 16 MiB


class TestRealtimeInApp:
    def test_an_append_over_one_item_is_refused_and_the_session_closed_1009(
        self, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with (
            gateway(database, realtime_max_item_seconds=1) as client,
            client.websocket_connect(REALTIME, headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.receive_text()
            ws.send_text(append(b"\x00\x01" * RATE * 3))  # three seconds in one event
            (error,) = events_until(ws, "error")
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert error["error"]["code"] == "message_too_large"
        assert closed.value.code == 1009
        assert usage_rows(database) == []

    def test_appends_within_the_limit_are_cut_into_items_no_longer_than_it(
        self, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with (
            gateway(database, realtime_max_item_seconds=1) as client,
            client.websocket_connect(REALTIME, headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.receive_text()
            ws.send_text(
                json.dumps({"type": "session.update", "session": {"turn_detection": None}})
            )
            tone = b"\x00\x10" * (RATE * 8 // 10)  # 0.8 s, twice: 1.6 s in all
            ws.send_text(append(tone))
            ws.send_text(append(tone))
            ws.send_text(json.dumps({"type": "input_audio_buffer.commit"}))
            events = events_until(ws, "input_audio_buffer.committed")
            events += events_until(ws, "input_audio_buffer.committed")
        # One item of exactly one second when the limit was reached, the 0.6 s left on commit;
        # before, the second append made one item of 1.6 s and the commit found nothing.
        committed = [event for event in events if event["type"] == "input_audio_buffer.committed"]
        assert len(committed) == 2
        assert [event for event in events if event["type"] == "error"] == []


class TestFunasrInApp:
    def test_a_binary_frame_over_one_item_is_refused_with_1009(self, database: Database) -> None:
        key = create_tenant_with_key(database, "acme")
        with (
            gateway(database, realtime_max_item_seconds=1) as client,
            client.websocket_connect("/funasr", headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.send_text(json.dumps({"mode": "offline", "audio_fs": 16_000, "is_speaking": True}))
            ws.send_bytes(b"\x00\x01" * 16_000 * 3)  # three seconds at 16 kHz
            message = json.loads(ws.receive_text())
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert message["error"]["code"] == "message_too_large"
        assert closed.value.code == 1009
        assert usage_rows(database) == []


@pytest.mark.e2e
class TestAsServed:
    def test_uvicorn_refuses_past_the_cap_and_the_session_below_it(
        self, database: Database, tmp_path: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        port = free_port()
        environment = {
            "BILLING_DATABASE_URL": database.url,
            "GATEWAY_NODES": f"http://127.0.0.1:{free_port()}",
            "GATEWAY_REALTIME_MAX_ITEM_SECONDS": "1",
            "GATEWAY_JOB_WORKERS": "0",
            "GATEWAY_JOB_STORAGE_DIR": str(tmp_path / "jobs"),
        }
        settings = GatewaySettings(realtime_max_item_seconds=1)
        server_cap = websocket_max_message_bytes(settings)  # 96,000: FunASR at 48 kHz
        over_realtime = realtime_max_message_bytes(settings) + 1024
        assert over_realtime < server_cap
        url = f"ws://127.0.0.1:{port}{REALTIME}"
        headers = {"Authorization": f"Bearer {key}"}
        with running(
            ["gateway", "--port", str(port)],
            environment,
            f"http://127.0.0.1:{port}/health/live",
            tmp_path / "gateway.log",
        ):
            with connect(url, additional_headers=headers, max_size=None) as ws:
                json.loads(ws.recv(timeout=30))
                ws.send(append(b"\x00\x01" * (server_cap // 2)))  # a 16 MiB cap took it whole
                with pytest.raises(ConnectionClosed) as by_server:
                    ws.recv(timeout=30)
            with connect(url, additional_headers=headers, max_size=None) as ws:
                json.loads(ws.recv(timeout=30))
                ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": "A" * over_realtime})
                )
                error = json.loads(ws.recv(timeout=30))
                with pytest.raises(ConnectionClosed) as by_session:
                    ws.recv(timeout=30)
        assert by_server.value.rcvd is not None
        assert by_server.value.rcvd.code == 1009
        assert error["error"]["code"] == "message_too_large"
        assert by_session.value.rcvd is not None
        assert by_session.value.rcvd.code == 1009
        assert usage_rows(database) == []

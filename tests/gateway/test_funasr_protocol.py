"""FunASR's WebSocket protocol at ``/funasr``: a client sending 16 kHz PCM in real-time-sized
chunks (60 ms, as FunASR's own client does with ``chunk_size`` [5, 10, 5]) gets ``2pass-offline``
results per turn or one ``offline`` result, each item billed on its own ledger row; keys by
header or ``?token=`` (kept out of the logs); refusals."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from billing.config import BillingSettings
from billing.db import Database
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.reconcile.service import reconcile
from billing.tokens import count_tokens
from gateway.app import create_app
from gateway.streaming.endpoints import RedactQueryToken
from inference.audio import decode_audio, to_pcm16
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running
from tests.gateway.conftest import gateway_settings

BINARY = Subprotocol("binary")
CHUNK_BYTES = 1_920  # 60 ms of 16 kHz 16-bit mono


def pcm16k(wav_bytes: bytes) -> bytes:
    return to_pcm16(decode_audio(wav_bytes))


def first_message(mode: str, **fields: Any) -> str:
    return json.dumps(
        {
            "mode": mode,
            "chunk_size": [5, 10, 5],
            "chunk_interval": 10,
            "wav_name": "lecture",
            "is_speaking": True,
            "hotwords": "",
            "itn": True,
            "audio_fs": 16_000,
            "wav_format": "pcm",
            **fields,
        }
    )


def gateway(database: Database, node_url: str) -> TestClient:
    settings = gateway_settings(
        node_url, default_model="pocketsphinx-en", cache_enabled=False, job_workers=0
    )
    return TestClient(create_app(settings, BillingSettings(database_url=database.url)))


def until_final(ws: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while not messages or not messages[-1].get("is_final"):
        messages.append(json.loads(ws.receive_text()))
    return messages


def unreconciled(database: Database) -> list[str]:
    with database.transaction() as session:
        findings = reconcile(session, billing_period(utcnow()))
        return [f"{f.tenant}: {f.check} {f.detail}" for f in findings if not f.ok]


class TestModes:
    def test_2pass_answers_each_turn_then_a_final_message(
        self, node_url: str, database: Database, two_sentences_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        pcm = b"\x00" * 9_600 + pcm16k(two_sentences_wav.read_bytes()) + b"\x00" * 32_000
        with (
            gateway(database, node_url) as client,
            client.websocket_connect("/funasr", headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.send_text(first_message("2pass"))
            for start in range(0, len(pcm), CHUNK_BYTES):
                ws.send_bytes(pcm[start : start + CHUNK_BYTES])
            ws.send_text(json.dumps({"is_speaking": False}))
            messages = until_final(ws)
        *turns, final = messages
        assert len(turns) == 2  # the one-second pause ends the first turn
        for turn in turns:
            assert turn["mode"] == "2pass-offline"
            assert turn["wav_name"] == "lecture"
            assert turn["is_final"] is False
            assert turn["text"]
            assert json.loads(turn["timestamp"])
        assert "please call me" in turns[1]["text"]
        assert final == {
            "wav_name": "lecture",
            "mode": "2pass-offline",
            "text": "",
            "is_final": True,
        }
        rows = usage_rows(database)
        assert [row.billed_tokens for row in rows] == [
            count_tokens(turn["text"], "char") for turn in turns
        ]
        assert account(database, "acme").reserved_micros == 0
        assert unreconciled(database) == []

    def test_offline_answers_once_at_the_end(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        pcm = pcm16k(weather_wav.read_bytes())
        with (
            gateway(database, node_url) as client,
            client.websocket_connect("/funasr", headers={"X-API-Key": key}) as ws,
        ):
            ws.send_text(first_message("offline"))
            for start in range(0, len(pcm), CHUNK_BYTES):
                ws.send_bytes(pcm[start : start + CHUNK_BYTES])
            ws.send_text(json.dumps({"is_speaking": False}))
            (message,) = until_final(ws)
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert message["mode"] == "offline"
        assert "nice today" in message["text"] or "weather" in message["text"]
        assert closed.value.code == 1000
        (row,) = usage_rows(database)
        assert row.billed_tokens == count_tokens(message["text"], "char")


class TestRefusals:
    def test_no_key(self, node_url: str, database: Database) -> None:
        with (
            gateway(database, node_url) as client,
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect("/funasr"),
        ):
            pass
        assert refused.value.status_code == 401

    def test_a_first_message_that_is_not_a_configuration(
        self, node_url: str, database: Database
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with (
            gateway(database, node_url) as client,
            client.websocket_connect(f"/funasr?token={key}") as ws,
        ):
            ws.send_text(first_message("3pass"))
            error = json.loads(ws.receive_text())
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert error["error"]["code"] == "invalid_request"
        assert "mode" in error["error"]["message"]
        assert closed.value.code == 1008

    def test_an_item_past_the_credit_ends_the_session(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=1)
        with (
            gateway(database, node_url) as client,
            client.websocket_connect("/funasr", headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.send_text(first_message("offline"))
            ws.send_bytes(pcm16k(weather_wav.read_bytes()))
            ws.send_text(json.dumps({"is_speaking": False}))
            error = json.loads(ws.receive_text())
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert error["error"]["code"] == "insufficient_quota"
        assert closed.value.code == 1008
        assert usage_rows(database) == []


def test_the_query_token_is_kept_out_of_the_logs() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5555", "/funasr?token=sk-asrgw-secret&x=1"), None,
    )  # fmt: skip
    assert RedactQueryToken().filter(record)
    assert "sk-asrgw-secret" not in record.getMessage()
    assert "/funasr?token=[redacted]&x=1" in record.getMessage()


@pytest.mark.e2e
def test_a_websockets_client_with_the_key_in_the_query(
    node_url: str, database: Database, weather_wav: Path, tmp_path: Path
) -> None:
    """As FunASR's own client connects: ``websockets``, subprotocol ``binary``, no headers."""
    key = create_tenant_with_key(database, "acme")
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
    pcm = pcm16k(weather_wav.read_bytes())
    log = tmp_path / "gateway.log"
    url = f"http://127.0.0.1:{port}"
    with (
        running(["gateway", "--port", str(port)], environment, f"{url}/health/ready", log),
        connect(f"ws://127.0.0.1:{port}/funasr?token={key}", subprotocols=[BINARY]) as ws,
    ):
        ws.send(first_message("offline"))
        for start in range(0, len(pcm), CHUNK_BYTES):
            ws.send(pcm[start : start + CHUNK_BYTES])
        ws.send(json.dumps({"is_speaking": False}))
        result = json.loads(ws.recv(timeout=120))
        accepted = ws.subprotocol
    assert accepted == "binary"
    assert result["is_final"] is True
    assert result["text"]
    (row,) = usage_rows(database)
    assert row.billed_tokens == count_tokens(result["text"], "char")
    assert key not in log.read_text()

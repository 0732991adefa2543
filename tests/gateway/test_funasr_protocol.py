"""FunASR's WebSocket protocol at ``/funasr``: a client sending 16 kHz PCM in real-time-sized
chunks (60 ms, as FunASR's own client does with ``chunk_size`` [5, 10, 5]) gets ``2pass-offline``
results per turn or one ``offline`` result, each item billed on its own ledger row; keys by
header or a client token in ``?token=`` (kept out of the logs); refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from billing.config import BillingSettings
from billing.db import Database
from billing.keys.schemas import AuthenticatedKey
from billing.keys.service import authenticate
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.reconcile.service import reconcile
from billing.tokens import count_tokens
from gateway.app import create_app
from gateway.errors import QuotaExceeded
from gateway.streaming.live import LiveTurn, TurnOutcome
from inference.audio import decode_audio, to_pcm16
from inference.protocol import TranscribeParams, TranscriptionResult
from tests.conftest import NODE_SECRET, ONLINE_MODEL
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running
from tests.gateway.conftest import gateway_settings

BINARY = Subprotocol("binary")
CHUNK_BYTES = 1_920  # 60 ms of 16 kHz 16-bit mono


def pcm16k(wav_bytes: bytes) -> bytes:
    return to_pcm16(decode_audio(wav_bytes))


@pytest.fixture(scope="module")
def two_turns(two_sentences_wav: Path) -> bytes:
    """Two sentences a second apart, with silence before and after: two turns of speech."""
    return b"\x00" * 9_600 + pcm16k(two_sentences_wav.read_bytes()) + b"\x00" * 32_000


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


def spoken(client: TestClient, key: str, mode: str, pcm: bytes) -> list[dict[str, Any]]:
    with client.websocket_connect("/funasr", headers={"Authorization": f"Bearer {key}"}) as ws:
        ws.send_text(first_message(mode))
        for start in range(0, len(pcm), CHUNK_BYTES):
            ws.send_bytes(pcm[start : start + CHUNK_BYTES])
        ws.send_text(json.dumps({"is_speaking": False}))
        return until_final(ws)


def caller_for(database: Database, secret: str) -> AuthenticatedKey:
    with database.transaction() as session:
        return authenticate(session, secret)


def unreconciled(database: Database) -> list[str]:
    with database.transaction() as session:
        findings = reconcile(session, billing_period(utcnow()))
        return [f"{f.tenant}: {f.check} {f.detail}" for f in findings if not f.ok]


class TestModes:
    def test_2pass_answers_each_turn_then_a_final_message(
        self, node_url: str, database: Database, two_turns: bytes
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with gateway(database, node_url) as client:
            *turns, final = spoken(client, key, "2pass", two_turns)
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
            client.websocket_connect("/funasr", headers={"X-API-Key": key}) as ws,
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


@pytest.mark.e2e
def test_a_websockets_client_with_a_client_token_in_the_query(
    node_url: str, database: Database, weather_wav: Path, tmp_path: Path
) -> None:
    """As FunASR's own client connects: ``websockets``, subprotocol ``binary``, no headers; a
    client token minted with the key in the query, where the key itself would be refused."""
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
    with running(["gateway", "--port", str(port)], environment, f"{url}/health/ready", log):
        minted = httpx.post(
            f"{url}/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {key}"}
        )
        token = minted.json()["value"]
        with connect(f"ws://127.0.0.1:{port}/funasr?token={token}", subprotocols=[BINARY]) as ws:
            result = transcribed(ws, pcm)
            accepted = ws.subprotocol
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/funasr?token={key}", subprotocols=[BINARY])
    assert accepted == "binary"
    assert result["is_final"] is True
    assert result["text"]
    (row,) = usage_rows(database)
    assert row.billed_tokens == count_tokens(result["text"], "char")
    assert refused.value.response.status_code == 401
    assert b"api_key_in_url" in refused.value.response.body
    logged = log.read_text()
    assert key not in logged
    assert token not in logged
    assert "/funasr?token=[redacted]" in logged


def transcribed(ws: Any, pcm: bytes) -> dict[str, Any]:
    ws.send(first_message("offline"))
    for start in range(0, len(pcm), CHUNK_BYTES):
        ws.send(pcm[start : start + CHUNK_BYTES])
    ws.send(json.dumps({"is_speaking": False}))
    result: dict[str, Any] = json.loads(ws.recv(timeout=120))
    return result


def online_gateway(database: Database, node_url: str) -> TestClient:
    settings = gateway_settings(
        node_url,
        default_model="pocketsphinx-en",
        online_model=ONLINE_MODEL,
        cache_enabled=False,
        job_workers=0,
    )
    return TestClient(create_app(settings, BillingSettings(database_url=database.url)))


class TestPartialResults:
    """With an online model on the nodes, text arrives while a turn is still spoken."""

    def test_2pass_sends_partials_then_each_turns_offline_text(
        self, online_node_url: str, database: Database, two_turns: bytes
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with online_gateway(database, online_node_url) as client:
            *messages, final = spoken(client, key, "2pass", two_turns)
        modes = [message["mode"] for message in messages]
        offline = [message for message in messages if message["mode"] == "2pass-offline"]
        assert len(offline) == 2  # one per turn, from the offline model
        assert "please call me" in offline[1]["text"]
        assert modes.count("2pass-online") >= 2
        assert modes[0] == "2pass-online"  # the first turn's text came while it was spoken
        assert all(message["is_final"] is False for message in messages)
        assert final["is_final"] is True
        # Each turn is billed for its final: the offline text that replaced the partials. The
        # two turns settle independently, so their rows may be written in either order.
        rows = usage_rows(database)
        assert sorted(row.billed_tokens for row in rows) == sorted(
            count_tokens(message["text"], "char") for message in offline
        )
        assert {row.model for row in rows} == {"pocketsphinx-en"}
        assert account(database, "acme").reserved_micros == 0
        assert unreconciled(database) == []

    def test_online_bills_the_partials_it_sent(
        self, online_node_url: str, database: Database, two_turns: bytes
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with online_gateway(database, online_node_url) as client:
            *partials, final = spoken(client, key, "online", two_turns)
        assert len(partials) >= 2
        assert {message["mode"] for message in partials} == {"online"}
        assert final == {"wav_name": "lecture", "mode": "online", "text": "", "is_final": True}
        rows = usage_rows(database)
        assert len(rows) == 2  # one per turn
        assert {row.model for row in rows} == {ONLINE_MODEL}
        sent = "".join(message["text"] for message in partials)
        assert sum(row.billed_tokens for row in rows) == count_tokens(sent, "char") > 0
        assert account(database, "acme").reserved_micros == 0
        assert unreconciled(database) == []

    def test_other_sample_rates_are_answered_per_turn(
        self, online_node_url: str, database: Database, weather_wav: Path
    ) -> None:
        """The online model takes 16 kHz; an 8 kHz session gets each turn once it ends."""
        key = create_tenant_with_key(database, "acme")
        samples = decode_audio(weather_wav.read_bytes())[::2]
        pcm = to_pcm16(samples) + b"\x00" * 16_000
        with (
            online_gateway(database, online_node_url) as client,
            client.websocket_connect("/funasr", headers={"X-API-Key": key}) as ws,
        ):
            ws.send_text(first_message("2pass", audio_fs=8_000))
            for start in range(0, len(pcm), CHUNK_BYTES // 2):
                ws.send_bytes(pcm[start : start + CHUNK_BYTES // 2])
            ws.send_text(json.dumps({"is_speaking": False}))
            *messages, _final = until_final(ws)
        assert "2pass-online" not in [message["mode"] for message in messages]
        assert len(usage_rows(database)) == 1  # the turn, billed as a whole

    def test_a_node_with_every_stream_taken_answers_turns_whole(
        self, online_node_url: str, database: Database, two_turns: bytes
    ) -> None:
        """The node refuses a third live stream (INFERENCE_MAX_STREAMS=2); the session goes on
        without partials and each turn is transcribed once it ends."""
        key = create_tenant_with_key(database, "acme")
        live = "ws" + online_node_url.removeprefix("http") + "/v1/transcribe/live"
        headers = {"Authorization": f"Bearer {NODE_SECRET}"}
        with (
            connect(live, additional_headers=headers) as first,
            connect(live, additional_headers=headers) as second,
        ):
            for stream in (first, second):
                stream.send(json.dumps({"model": ONLINE_MODEL}))
                assert json.loads(stream.recv(timeout=30)) == {"type": "ready"}
            with online_gateway(database, online_node_url) as client:
                *messages, _final = spoken(client, key, "2pass", two_turns)
        assert [message["mode"] for message in messages] == ["2pass-offline", "2pass-offline"]
        rows = usage_rows(database)
        assert [row.billed_tokens for row in rows] == [
            count_tokens(message["text"], "char") for message in messages
        ]
        assert account(database, "acme").reserved_micros == 0

    def test_a_turn_past_the_credit_ends_the_session_at_once(
        self, online_node_url: str, database: Database, two_sentences_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=1)
        pcm = b"\x00" * 9_600 + pcm16k(two_sentences_wav.read_bytes())
        with (
            online_gateway(database, online_node_url) as client,
            client.websocket_connect("/funasr", headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.send_text(first_message("2pass"))
            # The speech is never finished: the refusal comes while the turn is spoken.
            for start in range(0, len(pcm), CHUNK_BYTES):
                ws.send_bytes(pcm[start : start + CHUNK_BYTES])
            error = json.loads(ws.receive_text())
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert error["error"]["code"] == "insufficient_quota"
        assert closed.value.code == 1008
        assert usage_rows(database) == []
        assert account(database, "acme").reserved_micros == 0


class TestLiveTurnBilling:
    """A live turn's money, on a real node's online model and a real ledger: the client's
    sends are the ``on_delta`` answers, so what it was sent is exact."""

    def run_turn(
        self,
        client: TestClient,
        database: Database,
        key: str,
        pcm: bytes,
        *,
        deliveries: int,
        offline: bool,
        final_delivered: bool = True,
    ) -> tuple[TurnOutcome | None, list[str]]:
        state = client.app.state  # type: ignore[attr-defined]
        caller = caller_for(database, key)
        sent: list[str] = []

        async def scenario() -> TurnOutcome | None:
            async def on_delta(text: str) -> bool:
                if len(sent) >= deliveries:
                    return False  # the client has gone: this send failed
                sent.append(text)
                return True

            async def on_final(result: TranscriptionResult) -> bool:
                return final_delivered and await on_delta(result.text)

            turn = LiveTurn(
                state,
                caller,
                online=TranscribeParams(model=ONLINE_MODEL),
                offline=TranscribeParams(model="pocketsphinx-en") if offline else None,
                max_item_ms=30_000,
                on_delta=on_delta,
                on_final=on_final,
                protocol="funasr",
            )
            for start in range(0, len(pcm), CHUNK_BYTES):
                turn.feed(pcm[start : start + CHUNK_BYTES])
            turn.end()
            return await turn.outcome()

        assert client.portal is not None
        return client.portal.call(scenario), sent

    def test_a_client_gone_midturn_pays_for_the_partials_it_was_sent(
        self, online_node_url: str, database: Database, two_sentences_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        pcm = pcm16k(two_sentences_wav.read_bytes())
        with online_gateway(database, online_node_url) as client:
            outcome, sent = self.run_turn(client, database, key, pcm, deliveries=1, offline=True)
        assert outcome is not None
        assert outcome.final is None  # the offline text never reached the client
        (row,) = usage_rows(database)
        assert len(sent) == 1
        assert row.billed_tokens == count_tokens(sent[0], "char") > 0
        assert row.model == ONLINE_MODEL
        assert account(database, "acme").reserved_micros == 0
        assert unreconciled(database) == []

    @pytest.mark.parametrize("final_delivered", [True, False])
    def test_a_2pass_final_is_billed_only_once_the_client_was_sent_it(
        self,
        online_node_url: str,
        database: Database,
        two_sentences_wav: Path,
        final_delivered: bool,
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        pcm = pcm16k(two_sentences_wav.read_bytes())
        with online_gateway(database, online_node_url) as client:
            outcome, sent = self.run_turn(
                client,
                database,
                key,
                pcm,
                deliveries=1_000,
                offline=True,
                final_delivered=final_delivered,
            )
        assert outcome is not None
        (row,) = usage_rows(database)
        if final_delivered:
            # The offline text was the last thing sent: it is billed, in place of the partials.
            assert outcome.final is not None
            assert sent[-1] == outcome.final.text == outcome.text
            assert row.model == "pocketsphinx-en"
        else:
            # The offline pass ran, but its send failed: the partials the client has are billed.
            assert outcome.final is None
            assert outcome.text == "".join(sent)
            assert row.model == ONLINE_MODEL
        assert row.billed_tokens == count_tokens(outcome.text, "char")
        assert account(database, "acme").reserved_micros == 0
        assert unreconciled(database) == []

    def test_a_client_gone_before_any_text_pays_nothing(
        self, online_node_url: str, database: Database, two_sentences_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        pcm = pcm16k(two_sentences_wav.read_bytes())
        with online_gateway(database, online_node_url) as client:
            outcome, sent = self.run_turn(client, database, key, pcm, deliveries=0, offline=True)
        assert outcome is not None
        assert outcome.charge is None
        assert sent == []
        assert usage_rows(database) == []
        assert account(database, "acme").reserved_micros == 0

    def test_a_turn_whose_hold_does_not_fit_sends_nothing(
        self, online_node_url: str, database: Database, two_sentences_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=1)
        pcm = pcm16k(two_sentences_wav.read_bytes())
        with (
            online_gateway(database, online_node_url) as client,
            pytest.raises(QuotaExceeded),
        ):
            self.run_turn(client, database, key, pcm, deliveries=5, offline=False)
        assert usage_rows(database) == []
        assert account(database, "acme").reserved_micros == 0


class TestKeyRevocation:
    def test_a_revoked_key_ends_its_session_and_the_turn_delivered_stays_billed(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        from billing.keys.service import split_key
        from gateway.admin.auth import Scope, mint_token

        key = create_tenant_with_key(database, "acme")
        settings = gateway_settings(
            node_url,
            default_model="pocketsphinx-en",
            cache_enabled=False,
            job_workers=0,
            # Checked again this often: the test waits for the close, not for the clock.
            realtime_key_recheck_seconds=0.05,
        )
        one_turn = pcm16k(weather_wav.read_bytes()) + b"\x00" * 32_000
        admin = mint_token(settings, "ops@example.com", [Scope.keys_write], ttl_seconds=300)
        app = create_app(settings, BillingSettings(database_url=database.url))
        with (
            TestClient(app) as client,
            client.websocket_connect("/funasr", headers={"Authorization": f"Bearer {key}"}) as ws,
        ):
            ws.send_text(first_message("2pass"))
            for start in range(0, len(one_turn), CHUNK_BYTES):
                ws.send_bytes(one_turn[start : start + CHUNK_BYTES])
            turn = json.loads(ws.receive_text())
            revoked = client.post(
                f"/admin/keys/{split_key(key)}/revoke",
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert revoked.status_code == 200, revoked.text
            ended = json.loads(ws.receive_text())
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert turn["mode"] == "2pass-offline"
        assert turn["text"]
        assert ended["error"]["code"] == "invalid_api_key"
        assert (closed.value.code, closed.value.reason) == (4401, "invalid_api_key")
        (row,) = usage_rows(database)
        assert row.billed_tokens == count_tokens(turn["text"], "char")
        assert account(database, "acme").reserved_micros == 0
        assert unreconciled(database) == []

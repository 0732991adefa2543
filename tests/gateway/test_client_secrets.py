"""Client tokens for browser WebSockets: minted with an API key by
``POST /v1/realtime/client_secrets``, presented once on ``/v1/realtime`` or ``/funasr`` in the
key's place; a used, expired or orphaned token is refused, and so is an API key in the URL."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from billing.config import BillingSettings
from billing.db import Database
from billing.keys.schemas import KeyScope
from billing.keys.service import authenticate, create_api_key, revoke_api_key
from gateway.app import create_app
from gateway.client_secrets.service import (
    CLIENT_SECRET_RETENTION,
    mint_client_secret,
    purge_client_secrets,
    redeem_client_secret,
)
from gateway.log_redaction import RedactUrlSecrets
from tests.fixtures.factories import TEST_ACTOR, create_tenant_with_key
from tests.gateway.conftest import gateway_settings

REALTIME = "/v1/realtime?intent=transcription"
# No node is reached: opening a session needs none.
NO_NODE = "http://127.0.0.1:9"


def gateway(database: Database, **options: object) -> TestClient:
    settings = gateway_settings(NO_NODE, cache_enabled=False, job_workers=0, **options)
    return TestClient(create_app(settings, BillingSettings(database_url=database.url)))


@pytest.fixture
def key(database: Database) -> str:
    return create_tenant_with_key(database, "acme")


@pytest.fixture
def client(database: Database) -> Iterator[TestClient]:
    with gateway(database) as client:
        yield client


def mint(client: TestClient, key: str, **body: object) -> str:
    response = client.post(
        "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {key}"}, json=body
    )
    assert response.status_code == 200, response.text
    value: str = response.json()["value"]
    return value


def browser_protocols(token: str) -> list[str]:
    """What OpenAI's JavaScript SDK offers from a browser."""
    return ["realtime", f"openai-insecure-api-key.{token}"]


def opens_realtime(client: TestClient, token: str) -> str:
    """The first event of a realtime session opened with ``token`` in a subprotocol."""
    with client.websocket_connect(REALTIME, subprotocols=browser_protocols(token)) as ws:
        event: str = json.loads(ws.receive_text())["type"]
        assert ws.accepted_subprotocol == "realtime"
    return event


def refusal(client: TestClient, url: str, **options: object) -> tuple[int, dict[str, object]]:
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect(url, **options),  # type: ignore[arg-type]
    ):
        pass
    error: dict[str, object] = refused.value.json()["error"]
    return refused.value.status_code, error


class TestMinting:
    def test_a_token_lives_a_minute_by_default(self, client: TestClient, key: str) -> None:
        before = time.time()
        response = client.post(
            "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {key}"}
        )
        body = response.json()
        assert response.status_code == 200
        assert body["value"].startswith("ek_")
        assert before + 59 <= body["expires_at"] <= time.time() + 61
        assert body["session"] == {"type": "transcription"}

    def test_the_request_may_ask_for_another_lifetime(self, client: TestClient, key: str) -> None:
        response = client.post(
            "/v1/realtime/client_secrets",
            headers={"Authorization": f"Bearer {key}"},
            json={"expires_after": {"anchor": "created_at", "seconds": 300}},
        )
        assert response.json()["expires_at"] >= time.time() + 299

    def test_not_past_the_maximum(self, client: TestClient, key: str) -> None:
        response = client.post(
            "/v1/realtime/client_secrets",
            headers={"Authorization": f"Bearer {key}"},
            json={"expires_after": {"seconds": 601}},
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_value"
        assert response.json()["error"]["param"] == "expires_after.seconds"

    def test_only_a_key_that_may_transcribe(self, client: TestClient, database: Database) -> None:
        create_tenant_with_key(database, "acme")
        with database.transaction() as session:
            usage_only = create_api_key(
                session, "acme", name="usage", scopes=[KeyScope.usage_read], actor=TEST_ACTOR
            ).secret
        response = client.post(
            "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {usage_only}"}
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"

    def test_no_key(self, client: TestClient) -> None:
        response = client.post("/v1/realtime/client_secrets")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


class TestUse:
    def test_a_browser_opens_a_realtime_session_once(self, client: TestClient, key: str) -> None:
        token = mint(client, key)
        assert opens_realtime(client, token) == "transcription_session.created"
        status, error = refusal(client, REALTIME, subprotocols=browser_protocols(token))
        assert status == 401
        assert error["code"] == "invalid_api_key"
        assert "used already" in str(error["message"])

    @pytest.mark.parametrize("query", ["client_secret", "token"])
    def test_in_the_realtime_query(self, client: TestClient, key: str, query: str) -> None:
        token = mint(client, key)
        with client.websocket_connect(f"{REALTIME}&{query}={token}") as ws:
            assert json.loads(ws.receive_text())["type"] == "transcription_session.created"

    def test_a_funasr_client_with_the_token_in_the_query(
        self, client: TestClient, key: str
    ) -> None:
        token = mint(client, key)
        with client.websocket_connect(f"/funasr?token={token}", subprotocols=["binary"]) as ws:
            assert ws.accepted_subprotocol == "binary"
        status, error = refusal(client, f"/funasr?token={token}")
        assert (status, error["code"]) == (401, "invalid_api_key")

    def test_used_once_across_replicas(self, database: Database, key: str) -> None:
        with gateway(database) as first, gateway(database) as second:
            token = mint(first, key)
            assert opens_realtime(second, token) == "transcription_session.created"
            status, _ = refusal(first, REALTIME, subprotocols=browser_protocols(token))
        assert status == 401

    def test_an_expired_token(self, client: TestClient, database: Database, key: str) -> None:
        with database.transaction() as session:
            caller = authenticate(session, key)
            token, _ = mint_client_secret(session, caller, timedelta(seconds=-1))
        status, error = refusal(client, f"/funasr?token={token}")
        assert (status, error["code"]) == (401, "invalid_api_key")
        assert "expired" in str(error["message"])

    def test_a_token_of_a_revoked_key(
        self, client: TestClient, database: Database, key: str
    ) -> None:
        token = mint(client, key)
        with database.transaction() as session:
            revoke_api_key(session, key, actor=TEST_ACTOR)
        status, error = refusal(client, REALTIME, subprotocols=browser_protocols(token))
        assert (status, error["code"]) == (401, "invalid_api_key")
        assert error["message"] == "This API key has been revoked."

    def test_an_unknown_token(self, client: TestClient) -> None:
        status, error = refusal(client, "/funasr?token=ek_not-a-token")
        assert (status, error["code"]) == (401, "invalid_api_key")


class TestRetention:
    def test_the_sweep_forgets_spent_tokens_only(self, database: Database, key: str) -> None:
        with database.transaction() as session:
            caller = authenticate(session, key)
            mint_client_secret(session, caller, -CLIENT_SECRET_RETENTION - timedelta(minutes=1))
            fresh, _ = mint_client_secret(session, caller, timedelta(seconds=60))
        assert purge_client_secrets(database) == 1
        with database.transaction() as session:
            assert redeem_client_secret(session, fresh).key_prefix == caller.key_prefix


class TestApiKeysInUrls:
    @pytest.mark.parametrize(
        "url",
        ["/funasr?token={key}", f"{REALTIME}&token={{key}}", "/v1/realtime?client_secret={key}"],
    )
    def test_are_refused_with_the_fix(self, client: TestClient, key: str, url: str) -> None:
        status, error = refusal(client, url.format(key=key))
        assert status == 401
        assert error["code"] == "api_key_in_url"
        assert "POST /v1/realtime/client_secrets" in str(error["message"])

    def test_a_header_still_carries_a_key(self, client: TestClient, key: str) -> None:
        with client.websocket_connect("/funasr", headers={"Authorization": f"Bearer {key}"}):
            pass
        with client.websocket_connect(REALTIME, subprotocols=browser_protocols(key)) as ws:
            assert json.loads(ws.receive_text())["type"] == "transcription_session.created"


def test_a_client_secret_in_a_logged_url_is_redacted() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5555", "/v1/realtime?intent=transcription&client_secret=ek_abc"), None,
    )  # fmt: skip
    assert RedactUrlSecrets().filter(record)
    assert "ek_abc" not in record.getMessage()
    assert "&client_secret=[redacted]" in record.getMessage()

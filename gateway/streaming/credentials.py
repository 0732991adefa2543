"""Who opens a streaming WebSocket: an API key in a header, or a client token.

Browsers cannot set headers on a WebSocket, so they present a client token (minted by
``POST /v1/realtime/client_secrets``) in the ``openai-insecure-api-key.<token>`` subprotocol,
as OpenAI's JavaScript SDK does, or in the query (``?client_secret=`` / ``?token=``). An API
key in the query is refused without being looked up: a URL is written to proxy and server
access logs, and the key with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from fastapi import WebSocket

from billing.db import Database
from billing.errors import InvalidApiKey
from billing.keys.schemas import AuthenticatedKey
from gateway.client_secrets.service import is_client_secret, redeem_client_secret
from gateway.deps import caller_for_key, presented_api_key
from gateway.errors import ApiKeyInUrl, AuthError

# OpenAI's clients put the credential in a subprotocol: a header, not the URL.
KEY_SUBPROTOCOL = "openai-insecure-api-key."
QUERY_CREDENTIALS = ("client_secret", "token")
KEY_IN_URL_MESSAGE = (
    "An API key in the URL would be kept in proxy logs, so it is refused: mint a client token "
    "with POST /v1/realtime/client_secrets (Authorization: Bearer <key>) and connect with "
    "?token=<client token>, or send Authorization: Bearer <key> from a client that can set "
    "headers."
)


@dataclass(frozen=True)
class Presented:
    secret: str
    in_url: bool


def offered_subprotocols(websocket: WebSocket) -> list[str]:
    header = websocket.headers.get("sec-websocket-protocol", "")
    return [part.strip() for part in header.split(",") if part.strip()]


def presented_credential(websocket: WebSocket) -> Presented:
    """The credential of the handshake: ``Authorization: Bearer`` or ``X-API-Key``, else the
    key subprotocol, else the query."""
    in_headers = presented_api_key(websocket.headers)
    if in_headers:
        return Presented(in_headers, in_url=False)
    for part in offered_subprotocols(websocket):
        if part.startswith(KEY_SUBPROTOCOL):
            return Presented(part.removeprefix(KEY_SUBPROTOCOL), in_url=False)
    for name in QUERY_CREDENTIALS:
        if websocket.query_params.get(name, "").strip():
            return Presented(websocket.query_params[name].strip(), in_url=True)
    return Presented("", in_url=False)


def _redeem(database: Database, token: str) -> AuthenticatedKey:
    try:
        with database.transaction() as session:
            return redeem_client_secret(session, token)
    except InvalidApiKey as error:
        raise AuthError(error.message) from None


async def streaming_caller(
    websocket: WebSocket, presented: Presented, missing: str
) -> AuthenticatedKey:
    """The caller a credential stands for: a client token is used up here (on any replica,
    once); an API key is looked up as on every route, unless it came in the URL."""
    database: Database = websocket.app.state.database
    if is_client_secret(presented.secret):
        return await anyio.to_thread.run_sync(_redeem, database, presented.secret)
    if presented.in_url:
        raise ApiKeyInUrl(KEY_IN_URL_MESSAGE)
    if not presented.secret:
        raise AuthError(missing)
    return await caller_for_key(websocket, database, presented.secret)

"""The streaming WebSockets: OpenAI's realtime transcription (``/v1/realtime``) and FunASR's
protocol (``/funasr``)."""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, WebSocket
from starlette.responses import JSONResponse

from billing.keys.schemas import AuthenticatedKey, KeyScope
from gateway.deps import caller_of, refuse_without_scope
from gateway.errors import AuthError, GatewayError, InvalidRequest, RetryLater
from gateway.streaming.funasr import FunasrSession
from gateway.streaming.realtime import RealtimeSession

router = APIRouter()

# Browsers cannot set headers on a WebSocket: OpenAI's clients put the key in a subprotocol.
KEY_SUBPROTOCOL = "openai-insecure-api-key."
REALTIME_SUBPROTOCOL = "realtime"


def presented_key(websocket: WebSocket) -> tuple[str, str | None]:
    """The API key (``Authorization: Bearer``, ``X-API-Key`` or the key subprotocol) and the
    subprotocol to accept."""
    offered = [
        part.strip()
        for part in websocket.headers.get("sec-websocket-protocol", "").split(",")
        if part.strip()
    ]
    accepted = REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered else None
    authorization = websocket.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip(), accepted
    if websocket.headers.get("x-api-key"):
        return websocket.headers["x-api-key"].strip(), accepted
    for part in offered:
        if part.startswith(KEY_SUBPROTOCOL):
            return part.removeprefix(KEY_SUBPROTOCOL), accepted
    return "", accepted


async def refuse(websocket: WebSocket, error: GatewayError) -> None:
    """An HTTP error answer to the upgrade, as for any request (a close where the server
    cannot send one)."""
    headers = error.headers() if isinstance(error, RetryLater) else None
    response = JSONResponse(error.envelope(), status_code=error.status_code, headers=headers)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        await websocket.close(code=1008, reason=error.code)


@router.websocket("/v1/realtime")
async def realtime_transcription(websocket: WebSocket, intent: str | None = None) -> None:
    """A realtime transcription session in OpenAI's realtime protocol."""
    state = websocket.app.state
    key, subprotocol = presented_key(websocket)
    try:
        if intent not in (None, "transcription"):
            raise InvalidRequest(
                "This gateway serves realtime transcription only: intent=transcription.",
                param="intent",
            )
        if not key:
            raise AuthError("No API key: send Authorization: Bearer <key>.")
        caller: AuthenticatedKey = await caller_of(websocket, state.database, None, key)
        refuse_without_scope(caller, KeyScope.transcribe)
        # A session holds one of the key's concurrent-request slots for as long as it is open.
        admission = await state.rate_limits.admit(caller)
    except GatewayError as error:
        await refuse(websocket, error)
        return
    try:
        await websocket.accept(subprotocol=subprotocol)
        await RealtimeSession(websocket, caller, "transcription_session.created").run()
    finally:
        await state.rate_limits.release(admission)


# FunASR's clients cannot set headers: they may put the key in the query, ?token=<key>.
QUERY_TOKEN = "token"
FUNASR_SUBPROTOCOL = "binary"


@router.websocket("/funasr")
async def funasr_protocol(websocket: WebSocket, token: str | None = None) -> None:
    """A FunASR WebSocket session (offline, online and 2pass modes) behind an API key."""
    state = websocket.app.state
    key, _ = presented_key(websocket)
    key = key or (token or "").strip()
    offered = websocket.headers.get("sec-websocket-protocol", "")
    subprotocol = FUNASR_SUBPROTOCOL if FUNASR_SUBPROTOCOL in offered.split(", ") else None
    try:
        if not key:
            raise AuthError(
                "No API key: send Authorization: Bearer <key>, or ?token=<key> from a client "
                "that cannot set headers."
            )
        caller: AuthenticatedKey = await caller_of(websocket, state.database, None, key)
        refuse_without_scope(caller, KeyScope.transcribe)
        admission = await state.rate_limits.admit(caller)
    except GatewayError as error:
        await refuse(websocket, error)
        return
    try:
        await websocket.accept(subprotocol=subprotocol)
        await FunasrSession(websocket, caller).run()
    finally:
        await state.rate_limits.release(admission)


class RedactQueryToken(logging.Filter):
    """Keeps ``?token=<key>`` out of the server's logs (uvicorn logs WebSocket paths with their
    query)."""

    pattern = re.compile(r"([?&]token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                self.pattern.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg
                for arg in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str):
            record.msg = self.pattern.sub(r"\1[redacted]", record.msg)
        return True


def redact_query_tokens() -> None:
    """Install the filter on uvicorn's loggers (once)."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactQueryToken) for existing in logger.filters):
            logger.addFilter(RedactQueryToken())

"""The streaming WebSockets: OpenAI's realtime transcription (``/v1/realtime``) and FunASR's
protocol (``/funasr``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, WebSocket

from billing.keys.schemas import AuthenticatedKey, KeyScope
from gateway.deps import caller_of, refuse_without_scope
from gateway.errors import AuthError, GatewayError, InvalidRequest, error_response
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
    try:
        await websocket.send_denial_response(error_response(error))
    except RuntimeError:
        await websocket.close(code=1008, reason=error.code)


@asynccontextmanager
async def admitted_session(
    websocket: WebSocket, key: str, missing_key: str, refusal: GatewayError | None = None
) -> AsyncIterator[AuthenticatedKey | None]:
    """The session's caller, holding one of its key's concurrent-request slots until the block
    ends; ``None`` once the upgrade was refused with its HTTP error."""
    state = websocket.app.state
    try:
        if refusal is not None:
            raise refusal
        if not key:
            raise AuthError(missing_key)
        caller: AuthenticatedKey = await caller_of(websocket, state.database, None, key)
        refuse_without_scope(caller, KeyScope.transcribe)
        admission = await state.rate_limits.admit(caller)
    except GatewayError as error:
        await refuse(websocket, error)
        yield None
        return
    try:
        yield caller
    finally:
        await state.rate_limits.release(admission)


@router.websocket("/v1/realtime")
async def realtime_transcription(websocket: WebSocket, intent: str | None = None) -> None:
    """A realtime transcription session in OpenAI's realtime protocol."""
    key, subprotocol = presented_key(websocket)
    wrong_intent = None
    if intent not in (None, "transcription"):
        wrong_intent = InvalidRequest(
            "This gateway serves realtime transcription only: intent=transcription.",
            param="intent",
        )
    missing = "No API key: send Authorization: Bearer <key>."
    async with admitted_session(websocket, key, missing, wrong_intent) as caller:
        if caller is not None:
            await websocket.accept(subprotocol=subprotocol)
            await RealtimeSession(websocket, caller, "transcription_session.created").run()


# FunASR's clients cannot set headers: they may put the key in the query, ?token=<key>.
FUNASR_SUBPROTOCOL = "binary"


@router.websocket("/funasr")
async def funasr_protocol(websocket: WebSocket, token: str | None = None) -> None:
    """A FunASR WebSocket session (offline, online and 2pass modes) behind an API key."""
    key, _ = presented_key(websocket)
    offered = websocket.headers.get("sec-websocket-protocol", "")
    subprotocol = FUNASR_SUBPROTOCOL if FUNASR_SUBPROTOCOL in offered.split(", ") else None
    missing = (
        "No API key: send Authorization: Bearer <key>, or ?token=<key> from a client that "
        "cannot set headers."
    )
    async with admitted_session(websocket, key or (token or "").strip(), missing) as caller:
        if caller is not None:
            await websocket.accept(subprotocol=subprotocol)
            await FunasrSession(websocket, caller).run()

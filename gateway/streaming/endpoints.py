"""The streaming WebSockets: OpenAI's realtime transcription (``/v1/realtime``) and FunASR's
protocol (``/funasr``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, WebSocket

from billing.keys.schemas import AuthenticatedKey, KeyScope
from gateway.deps import refuse_without_scope
from gateway.errors import GatewayError, InvalidRequest, error_response
from gateway.streaming.credentials import (
    offered_subprotocols,
    presented_credential,
    streaming_caller,
)
from gateway.streaming.funasr import FunasrSession
from gateway.streaming.realtime import RealtimeSession

router = APIRouter()

REALTIME_SUBPROTOCOL = "realtime"


async def refuse(websocket: WebSocket, error: GatewayError) -> None:
    """An HTTP error answer to the upgrade, as for any request (a close where the server
    cannot send one)."""
    try:
        await websocket.send_denial_response(error_response(error))
    except RuntimeError:
        await websocket.close(code=1008, reason=error.code)


@asynccontextmanager
async def admitted_session(
    websocket: WebSocket, missing_key: str, refusal: GatewayError | None = None
) -> AsyncIterator[AuthenticatedKey | None]:
    """The session's caller, holding one of its key's concurrent-request slots until the block
    ends; ``None`` once the upgrade was refused with its HTTP error."""
    state = websocket.app.state
    try:
        if refusal is not None:
            raise refusal
        presented = presented_credential(websocket)
        caller = await streaming_caller(websocket, presented, missing_key)
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
    offered = offered_subprotocols(websocket)
    subprotocol = REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered else None
    wrong_intent = None
    if intent not in (None, "transcription"):
        wrong_intent = InvalidRequest(
            "This gateway serves realtime transcription only: intent=transcription.",
            param="intent",
        )
    missing = (
        "No API key: send Authorization: Bearer <key>, or a client token from "
        "POST /v1/realtime/client_secrets in the subprotocol openai-insecure-api-key.<token>."
    )
    async with admitted_session(websocket, missing, wrong_intent) as caller:
        if caller is not None:
            await websocket.accept(subprotocol=subprotocol)
            await RealtimeSession(websocket, caller, "transcription_session.created").run()


# FunASR's clients cannot set headers: they put a client token in the query, ?token=<token>.
FUNASR_SUBPROTOCOL = "binary"


@router.websocket("/funasr")
async def funasr_protocol(websocket: WebSocket) -> None:
    """A FunASR WebSocket session (offline, online and 2pass modes) behind an API key."""
    offered = offered_subprotocols(websocket)
    subprotocol = FUNASR_SUBPROTOCOL if FUNASR_SUBPROTOCOL in offered else None
    missing = (
        "No API key: send Authorization: Bearer <key>, or ?token=<client token> (minted with "
        "POST /v1/realtime/client_secrets) from a client that cannot set headers."
    )
    async with admitted_session(websocket, missing) as caller:
        if caller is not None:
            await websocket.accept(subprotocol=subprotocol)
            await FunasrSession(websocket, caller).run()

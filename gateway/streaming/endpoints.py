"""The realtime transcription WebSocket, ``/v1/realtime?intent=transcription``."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from starlette.responses import JSONResponse

from billing.keys.schemas import AuthenticatedKey, KeyScope
from gateway.deps import caller_of, refuse_without_scope
from gateway.errors import AuthError, GatewayError, InvalidRequest, RetryLater
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

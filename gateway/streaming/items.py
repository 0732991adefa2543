"""One committed piece of live audio, transcribed and billed as its own request: the hold of
its worst case, the node, the settlement, one ledger row. Shared by the realtime WebSocket and
the FunASR protocol; the session decides what the client is told."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import State
from starlette.websockets import WebSocket, WebSocketDisconnect

from billing.keys.schemas import AuthenticatedKey
from gateway import metrics
from gateway.billed.dispatch import Billed, Order, RequestBilling, run_billed
from gateway.context import new_request_id
from gateway.transcriptions.service import transcript_usage
from inference.protocol import TranscribeParams, TranscriptionResult


async def transcribe_item(
    state: State,
    caller: AuthenticatedKey,
    pcm: bytes,
    sample_rate: int,
    params: TranscribeParams,
    *,
    protocol: str,
    client_gone: Callable[[], Awaitable[bool]],
) -> Billed[TranscriptionResult]:
    """The item's transcript, billed once it is ready for a client still there. Raises
    ``QuotaExceeded`` when its hold does not fit and the node's ``GatewayError`` otherwise, with
    nothing billed; cancelled, it gives its hold back."""
    audio_ms = len(pcm) * 1000 // (2 * sample_rate)

    async def produce() -> TranscriptionResult:
        return await state.nodes.transcribe(  # type: ignore[no-any-return]
            wav(pcm, sample_rate), "item.wav", "audio/wav", params, audio_ms=audio_ms
        )

    billing = RequestBilling(
        ledger=state.ledger,
        leases=state.lease_keeper,
        client_gone=client_gone,
        request_id=new_request_id(),
        caller=caller,
    )
    outcome = "failed"
    try:
        billed = await run_billed(
            billing, Order(audio_ms, produce, transcript_usage), TranscriptionResult
        )
        outcome = "completed"
        return billed
    finally:
        outcome = "client_gone" if await client_gone() else outcome
        metrics.STREAMED_AUDIO_SECONDS.labels(protocol, outcome).inc(audio_ms / 1000)


def wav(pcm: bytes, sample_rate: int) -> bytes:
    """16-bit mono PCM in a WAV container, which the node decodes and resamples to 16 kHz."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


async def send_json(websocket: WebSocket, message: dict[str, Any]) -> bool:
    """Send ``message``; False when the client has gone (nothing is raised for that)."""
    try:
        await websocket.send_text(json.dumps(message, ensure_ascii=False))
    except (WebSocketDisconnect, RuntimeError, OSError):
        return False
    return True

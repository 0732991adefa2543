"""One committed piece of live audio, transcribed and billed as its own request: the hold of
its worst case, the node, the transcript delivered, the settlement on what was delivered, one
ledger row (``gateway.billed.stream``). Shared by the realtime WebSocket and the FunASR
protocol; the session decides how the client is sent the text."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import State
from starlette.websockets import WebSocket, WebSocketDisconnect

from billing.keys.schemas import AuthenticatedKey
from billing.usage.schemas import UsageCharge
from gateway import metrics
from gateway.billed.dispatch import RequestBilling
from gateway.billed.stream import DeliveryMeter, metered
from gateway.context import new_request_id
from gateway.errors import GatewayError
from inference.protocol import TranscribeParams, TranscriptionResult

# Sends an item's transcript to the client; False when the client has gone.
Deliver = Callable[[TranscriptionResult], Awaitable[bool]]


@dataclass(frozen=True)
class ItemOutcome:
    result: TranscriptionResult
    charge: UsageCharge | None  # None: nothing billed (not delivered, or the settlement failed)
    failure: GatewayError | None  # why the delivered text could not be billed


def item_billing(state: State, caller: AuthenticatedKey) -> RequestBilling:
    """The money of one item of a session: a request of its own, with no Idempotency-Key."""

    async def never_gone() -> bool:
        return False  # streamed money is settled on what was delivered, not on this

    return RequestBilling(
        ledger=state.ledger,
        leases=state.lease_keeper,
        client_gone=never_gone,
        request_id=new_request_id(),
        caller=caller,
    )


async def open_item(
    state: State, caller: AuthenticatedKey, model: str, audio_ms: int
) -> DeliveryMeter:
    """An item's meter, its worst case held (``QuotaExceeded`` when it does not fit)."""
    return await DeliveryMeter.open(item_billing(state, caller), model=model, audio_ms=audio_ms)


def pcm_ms(pcm: bytes | bytearray, sample_rate: int) -> int:
    """The length of 16-bit mono PCM, in whole milliseconds."""
    return len(pcm) * 1000 // (2 * sample_rate)


async def transcribe_pcm(
    state: State, pcm: bytes, sample_rate: int, params: TranscribeParams
) -> TranscriptionResult:
    audio_ms = pcm_ms(pcm, sample_rate)
    return await state.nodes.transcribe(  # type: ignore[no-any-return]
        wav(pcm, sample_rate), "item.wav", "audio/wav", params, audio_ms=audio_ms
    )


async def transcribe_item(
    state: State,
    caller: AuthenticatedKey,
    pcm: bytes,
    sample_rate: int,
    params: TranscribeParams,
    *,
    protocol: str,
    deliver: Deliver,
) -> ItemOutcome:
    """Hold, transcribe, ``deliver``, settle: the item's transcript is billed only once the
    client was sent it. Raises ``QuotaExceeded`` when its hold does not fit and the node's
    ``GatewayError`` otherwise, with nothing billed; cancelled, it gives its hold back."""
    audio_ms = pcm_ms(pcm, sample_rate)
    outcome = "failed"
    try:
        async with metered(
            item_billing(state, caller), model=str(params.model or ""), audio_ms=audio_ms
        ) as meter:
            result = await transcribe_pcm(state, pcm, sample_rate, params)
            if await deliver(result):
                meter.sent_final(result)
                outcome = "completed"
            else:
                outcome = "client_gone"
        return ItemOutcome(result, meter.charge, meter.failure)
    finally:
        streamed_audio(protocol, outcome, audio_ms)


def streamed_audio(protocol: str, outcome: str, audio_ms: int) -> None:
    """Count an item's audio under how it ended (completed, failed, client_gone)."""
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

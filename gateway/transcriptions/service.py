"""A transcription as a billed order: checks before anything is held, then the node (or the
result cache) as the work of the money sequence (``gateway.billed.dispatch``).

Nothing is billed unless a transcript came back; the hold is given back on any failure before
that; the usage row is committed before the response is sent.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import UploadFile
from fastapi.responses import Response

from billing.keys.schemas import AuthenticatedKey
from gateway.audio_probe import LengthLimit, probe_audio_ms
from gateway.billed.call import BilledCall
from gateway.billed.dispatch import Billed, Order, Usage
from gateway.billed.stream import DeliveryMeter
from gateway.cache.keys import audio_md5_digest
from gateway.config import OPENAI_MODEL_ALIASES, GatewaySettings
from gateway.errors import (
    FileTooLarge,
    InvalidAudio,
    InvalidRequest,
    PermissionDenied,
)
from gateway.formats import TimestampGranularity
from gateway.streaming.sse import MeteredTranscriptStream
from gateway.transcriptions.schemas import TranscriptionInput
from inference.protocol import TranscribeParams, TranscriptionResult

UPLOAD_CHUNK_BYTES = 1024 * 1024


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The uploaded bytes, refusing more than ``max_bytes`` and refusing an empty file."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(UPLOAD_CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLarge(
                f"The uploaded file exceeds the limit of {max_bytes} bytes.", param="file"
            )
        chunks.append(chunk)
    if total == 0:
        raise InvalidAudio("The audio file is empty (0 bytes).", param="file")
    return b"".join(chunks)


def sync_audio_limit(settings: GatewaySettings) -> LengthLimit:
    """Synchronous calls take audio up to ``GATEWAY_MAX_SYNC_AUDIO_SECONDS``; longer audio is
    refused before anything is reserved, pointing to the jobs API."""
    return LengthLimit(
        settings.max_sync_audio_seconds,
        "synchronous requests",
        "Submit longer audio as an asynchronous job with POST /v1/jobs.",
    )


def resolve_model(requested: str, settings: GatewaySettings) -> str:
    if not requested or requested in OPENAI_MODEL_ALIASES:
        return settings.default_model
    return requested


def refuse_disallowed_model(caller: AuthenticatedKey, model: str) -> None:
    """403 before anything is probed or reserved when the key may not use ``model``."""
    if not caller.allows_model(model):
        raise PermissionDenied(f"This API key may not use the model '{model}'.", param="model")


def transcribe_params(request: TranscriptionInput) -> TranscribeParams:
    return TranscribeParams(
        model=request.model,
        language=request.language or "auto",
        hotwords=request.prompt or None,
        word_timestamps=TimestampGranularity.word in request.granularities,
        temperature=request.temperature or None,
    )


class AudioDigest:
    """The audio's MD5, computed on first use (by the result cache or an Idempotency-Key), at
    most once: about 1.5 ms of CPU per megabyte that a request needing neither does not pay,
    and on a worker thread for a large upload (``gateway.cache.keys.audio_md5_digest``)."""

    __slots__ = ("_audio", "_digest")

    def __init__(self, audio: bytes) -> None:
        self._audio = audio
        self._digest: bytes | None = None

    async def __call__(self) -> bytes:
        if self._digest is None:
            self._digest = await audio_md5_digest(self._audio)
        return self._digest

    async def hex(self) -> str:
        return (await self()).hex()


def transcript_usage(result: TranscriptionResult) -> Usage:
    return Usage(text=result.text, model=result.model, audio_ms=round(result.duration * 1000))


async def prepare_order(
    call: BilledCall,
    request: TranscriptionInput,
    params: TranscribeParams,
    md5: AudioDigest,
) -> Order[TranscriptionResult]:
    """Refusals before anything is held (model, audio, length), the cache lookup, and how the
    node produces the transcript (remembered in the cache)."""
    refuse_disallowed_model(call.caller, request.model)
    audio_ms = await probe_audio_ms(request.audio, sync_audio_limit(call.settings))
    tenant_id = call.caller.tenant_id
    cache = call.cache
    cached = await cache.lookup(tenant_id, await md5.hex(), params) if cache is not None else None

    async def produce() -> TranscriptionResult:
        result = await call.nodes.transcribe(
            request.audio, request.filename, request.content_type, params, audio_ms=audio_ms
        )
        if cache is not None:
            await cache.remember(tenant_id, await md5.hex(), params, result)
        return result

    return Order(audio_ms, produce, transcript_usage, cached)


async def transcribe(
    call: BilledCall,
    request: TranscriptionInput,
    render: Callable[[Billed[TranscriptionResult]], Response],
) -> Response:
    """Transcribe ``request`` (or answer it from the tenant's result cache, billed at the
    plan's cache-hit price and recorded as cached), bill it once, and ``render`` it."""
    params = transcribe_params(request)
    md5 = AudioDigest(request.audio)

    async def prepare() -> Order[TranscriptionResult]:
        return await prepare_order(call, request, params, md5)

    identity = {
        "model": params.model,
        "language": params.language,
        "prompt": params.hotwords,
        "word_timestamps": params.word_timestamps,
        **({"temperature": params.temperature} if params.temperature else {}),
    }
    return await call.respond(
        audio_md5=md5,
        identity=identity,
        result_type=TranscriptionResult,
        prepare=prepare,
        render=render,
    )


async def stream_transcription(
    call: BilledCall, request: TranscriptionInput
) -> MeteredTranscriptStream:
    """``stream=true``: the worst case held, or a cached answer charged (402 before anything
    is sent), then the node's deltas as Server-Sent Events, billed for what was sent
    (``gateway.streaming.sse``)."""
    if call.request.headers.get("idempotency-key"):
        raise InvalidRequest(
            "stream=true does not take an Idempotency-Key: a stream is billed for the text it "
            "sent, which a retry cannot replay. Send the request without stream to use a key.",
            param="Idempotency-Key",
        )
    params = transcribe_params(request)
    md5 = AudioDigest(request.audio)
    order = await prepare_order(call, request, params, md5)
    # Held (or, for a cached answer, charged) before the 200: a 402 is an ordinary response.
    meter = await DeliveryMeter.open(
        call.billing_of(call.request_id),
        model=request.model,
        audio_ms=order.audio_ms,
        cached=order.cached,
    )
    cache = call.cache
    tenant_id = call.caller.tenant_id

    async def remember(result: TranscriptionResult) -> None:
        if cache is not None:
            await cache.remember(tenant_id, await md5.hex(), params, result)

    # Last: from here the stream owns the key's concurrency slot and gives it back at its end.
    release_slot = call.request.state.slot.take()
    return MeteredTranscriptStream(
        release_slot=release_slot,
        meter=meter,
        cached=order.cached,
        open_stream=lambda: call.nodes.transcribe_stream(
            request.audio,
            request.filename,
            request.content_type,
            params,
            audio_ms=order.audio_ms,
        ),
        remember=remember,
    )

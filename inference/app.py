"""The node's HTTP service: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inference import metrics
from inference.audio import (
    SAMPLE_RATE,
    AudioArray,
    DecodeLimit,
    decode_audio,
    duration_seconds,
    request_limit,
)
from inference.auth import check_node_secret
from inference.config import InferenceSettings
from inference.engines.base import Engine, EngineOutput
from inference.engines.registry import build_engine, parse_model_specs
from inference.errors import (
    ClientGone,
    DetectionUnsupported,
    FileTooLarge,
    InferenceError,
    InvalidAudio,
    Unauthorized,
)
from inference.host import BatchingSettings, ModelHost, ModelPool
from inference.live import live_router
from inference.memory import MemoryGuard
from inference.protocol import (
    DETECT_LANGUAGE_PATH,
    LIVE_PATH,
    MODELS_PATH,
    NDJSON_MEDIA_TYPE,
    READY_PATH,
    TRANSCRIBE_PATH,
    TRANSCRIBE_STREAM_PATH,
    ErrorCode,
    LanguageDetection,
    ModelList,
    Segment,
    TranscribeParams,
    TranscriptionResult,
    Word,
)
from inference.security_headers import NoSniffMiddleware
from inference.shutdown import Drain, DrainMiddleware
from inference.vad import Span, VadSegmenter

UPLOAD_CHUNK_BYTES = 1024 * 1024
DISCONNECT_POLL_SECONDS = 0.05
LANGUAGE_DETECTION_SECONDS = 30
# Scripts written without spaces: segment texts are joined without one.
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "yue"})
logger = logging.getLogger(__name__)
T = TypeVar("T")


def error_response(
    status_code: int, code: str, message: str, error_type: str, retry_after: int | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status_code,
        content={"error": {"message": message, "type": error_type, "code": code}},
        headers={"Retry-After": str(retry_after)} if retry_after else None,
    )


def transcribe_params(
    model: Annotated[str | None, Form()] = None,
    language: Annotated[str, Form()] = "auto",
    hotwords: Annotated[str | None, Form()] = None,
    word_timestamps: Annotated[bool, Form()] = False,
    itn: Annotated[bool, Form()] = True,
    temperature: Annotated[float | None, Form(ge=0, le=1)] = None,
) -> TranscribeParams:
    return TranscribeParams(
        model=model or None,
        language=language or "auto",
        hotwords=hotwords or None,
        word_timestamps=word_timestamps,
        itn=itn,
        temperature=temperature,
    )


ParamsForm = Annotated[TranscribeParams, Depends(transcribe_params)]
# The most audio the gateway allows the file to decode to (``inference.protocol``).
MaxAudioMsForm = Annotated[int | None, Form(ge=1)]


def create_app(settings: InferenceSettings, engines: list[Engine] | None = None) -> FastAPI:
    """The node app; ``engines`` overrides what ``settings.models`` would build."""
    if engines is None:
        engines = [build_engine(spec, settings) for spec in parse_model_specs(settings.models)]
    batching = BatchingSettings(
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        max_batch_audio_seconds=settings.max_batch_audio_seconds,
        min_fill=settings.min_batch_fill,
        max_streams=settings.max_streams,
    )
    memory = MemoryGuard(settings.empty_cache_after_audio_seconds)
    pool = ModelPool(engines, batching, memory)
    vad = VadSegmenter(settings.max_segment_seconds)
    drain = Drain(settings.shutdown_delay_seconds, settings.shutdown_grace_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Load on each model's own thread: /health/live answers at once, /health/ready once
        # every model is loaded and warmed.
        pool.start()
        vad_loader = threading.Thread(target=vad.load_or_record, name="vad-loader", daemon=True)
        vad_loader.start()
        try:
            with drain.signal_hook():
                async with anyio.create_task_group() as group:
                    group.start_soon(drain.run)
                    yield
                    group.cancel_scope.cancel()
        finally:
            pool.close()

    app = FastAPI(title="asr-billing-gateway inference node", lifespan=lifespan)
    app.state.pool = pool
    app.state.settings = settings
    app.add_middleware(DrainMiddleware, drain=drain)
    app.add_middleware(NoSniffMiddleware)  # added last: outermost
    app.include_router(live_router(settings, pool, drain))

    @app.exception_handler(InferenceError)
    async def handle_inference_error(_request: Request, error: InferenceError) -> JSONResponse:
        return error_response(
            error.status_code,
            error.code,
            error.message,
            error.error_type,
            error.retry_after_seconds,
        )

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(
        _request: Request, error: RequestValidationError
    ) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        location = ".".join(str(part) for part in first.get("loc", ())[1:])
        return error_response(
            400,
            ErrorCode.invalid_request,
            f"{location}: {first.get('msg', 'invalid request')}",
            "invalid_request_error",
        )

    def require_node_secret(authorization: Annotated[str | None, Header()] = None) -> None:
        check_node_secret(settings, authorization)

    def limit_of(max_audio_ms: int | None, clip_seconds: float | None = None) -> DecodeLimit:
        return request_limit(settings.max_audio_seconds, max_audio_ms, clip_seconds)

    async def decode(upload: UploadFile, limit: DecodeLimit) -> AudioArray:
        data = await read_capped(upload, settings.max_upload_bytes)
        try:
            return await anyio.to_thread.run_sync(decode_audio, data, limit)
        except InvalidAudio:
            metrics.decode_failures.inc()
            raise

    async def speech_spans(audio: AudioArray) -> list[Span]:
        if audio.size <= settings.max_segment_seconds * SAMPLE_RATE:
            return [(0, int(audio.size))]
        return await anyio.to_thread.run_sync(vad.split, audio)

    @app.get(LIVE_PATH)
    async def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(READY_PATH)
    async def ready() -> JSONResponse:
        """Every model is loaded and warmed; 503 "draining" from SIGTERM on."""
        if drain.draining:
            return JSONResponse(
                status_code=503, content={"status": "draining", "in_flight": drain.in_flight}
            )
        body: dict[str, object] = {
            "models": [model.model_dump() for model in pool.models()],
            "gpu_memory": memory.report(),
            "in_flight": drain.in_flight,
        }
        if pool.ready and vad.ready:
            return JSONResponse({"status": "ready", **body})
        error = "; ".join(filter(None, [pool.error, vad.error])) or None
        status = "failed" if error else "loading"
        return JSONResponse(status_code=503, content={"status": status, "error": error, **body})

    def require_metrics_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if not settings.metrics_token:
            return
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), settings.metrics_token.encode()
        ):
            raise Unauthorized(
                "/metrics requires the metrics token: "
                "Authorization: Bearer <INFERENCE_METRICS_TOKEN>."
            )

    @app.get("/metrics", dependencies=[Depends(require_metrics_token)])
    async def prometheus_metrics() -> Response:
        """Prometheus exposition of the node's metrics."""
        memory.report()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get(MODELS_PATH, dependencies=[Depends(require_node_secret)])
    async def list_models() -> ModelList:
        """Models this node serves, with their capabilities."""
        return ModelList(data=pool.models())

    @app.post(TRANSCRIBE_STREAM_PATH, dependencies=[Depends(require_node_secret)])
    async def transcribe_stream(
        file: Annotated[UploadFile, File()],
        params: ParamsForm,
        max_audio_ms: MaxAudioMsForm = None,
    ) -> StreamingResponse:
        """The transcript as NDJSON: each stretch of speech's text as soon as it is decoded,
        then the canonical result."""
        host = pool.host_for(params.model)
        host.engine.resolve_language(params.language)
        started = time.perf_counter()
        with host.admission():
            audio = await decode(file, limit_of(max_audio_ms))
            spans = await speech_spans(audio)
        pieces = [audio[start:end] for start, end in spans]
        separator = text_separator(host)

        async def events() -> AsyncIterator[bytes]:
            outputs: list[EngineOutput] = []
            try:
                with host.admission():
                    async for output in host.transcribe_each(pieces, params):
                        outputs.append(output)
                        if output.text:
                            joiner = separator if any(o.text for o in outputs[:-1]) else ""
                            yield ndjson({"type": "delta", "text": joiner + output.text})
                result = assemble(host, params, audio, spans, outputs, started)
                yield ndjson({"type": "result", "result": result.model_dump(mode="json")})
            except InferenceError as error:
                yield ndjson({"type": "error", "error": error_body(error)})
            except Exception as error:
                logger.exception("streamed transcription failed")
                failure = InferenceError(f"The transcription failed: {error}")
                yield ndjson({"type": "error", "error": error_body(failure)})

        return StreamingResponse(events(), media_type=NDJSON_MEDIA_TYPE)

    @app.post(TRANSCRIBE_PATH, dependencies=[Depends(require_node_secret)])
    async def transcribe(
        request: Request,
        file: Annotated[UploadFile, File()],
        params: ParamsForm,
        max_audio_ms: MaxAudioMsForm = None,
    ) -> TranscriptionResult:
        """Transcribe one audio file into the canonical result (long audio is cut by VAD)."""
        host = pool.host_for(params.model)
        host.engine.resolve_language(params.language)  # refuse before any work is queued
        started = time.perf_counter()
        with host.admission():
            audio = await decode(file, limit_of(max_audio_ms))
            spans = await speech_spans(audio)
            pieces = [audio[start:end] for start, end in spans]
            outputs = await unless_disconnected(request, host.transcribe_many(pieces, params))
        return assemble(host, params, audio, spans, outputs, started)

    @app.post(DETECT_LANGUAGE_PATH, dependencies=[Depends(require_node_secret)])
    async def detect_language(
        request: Request,
        file: Annotated[UploadFile, File()],
        model: Annotated[str | None, Form()] = None,
        max_audio_ms: MaxAudioMsForm = None,
    ) -> LanguageDetection:
        """The spoken language of the first 30 seconds of the audio (no more is decoded)."""
        host = pool.host_for(model or None)
        with host.admission():
            clip = await decode(file, limit_of(max_audio_ms, LANGUAGE_DETECTION_SECONDS))
            languages = host.engine.info().languages
            if len(languages) == 1 and languages[0] != "auto":
                language = languages[0]
            else:
                params = TranscribeParams(model=host.model_id, language="auto")
                (output,) = await unless_disconnected(request, host.transcribe_many([clip], params))
                language = output.language
                if language == "auto":
                    raise DetectionUnsupported(
                        f"Model '{host.model_id}' does not identify languages; use a model "
                        "that does (SenseVoice, Whisper) or one with a single language."
                    )
        return LanguageDetection(
            language=language, model=host.model_id, duration=duration_seconds(clip)
        )

    return app


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client goes away first, cancel it so its queued items are dropped
    before they reach the model."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise ClientGone("The client closed the connection; the work was dropped.")
    finally:
        if not task.done():
            task.cancel()


def text_separator(host: ModelHost) -> str:
    """What joins the texts of two stretches of speech: nothing in Chinese or Japanese."""
    languages = host.engine.info().languages
    return "" if languages and languages[0] in UNSPACED_LANGUAGES else " "


def ndjson(event: dict[str, object]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def error_body(error: InferenceError) -> dict[str, object]:
    return {"message": error.message, "type": error.error_type, "code": str(error.code)}


def assemble(
    host: ModelHost,
    params: TranscribeParams,
    audio: AudioArray,
    spans: list[Span],
    outputs: list[EngineOutput],
    started: float,
) -> TranscriptionResult:
    """One canonical result from per-span outputs, with times shifted to the whole file."""
    segments: list[Segment] = []
    for (start, _end), output in zip(spans, outputs, strict=True):
        offset = start / SAMPLE_RATE
        for segment in output.segments:
            words = (
                [
                    Word(
                        word=word.word,
                        start=round(word.start + offset, 3),
                        end=round(word.end + offset, 3),
                    )
                    for word in segment.words
                ]
                if segment.words is not None
                else None
            )
            segments.append(
                segment.model_copy(
                    update={
                        "start": round(segment.start + offset, 3),
                        "end": round(segment.end + offset, 3),
                        "words": words,
                    }
                )
            )
    text = text_separator(host).join(output.text for output in outputs if output.text)
    language = next(
        (output.language for output in outputs if output.text),
        host.engine.resolve_language(params.language),
    )
    return TranscriptionResult(
        text=text,
        language=language,
        duration=duration_seconds(audio),
        segments=segments,
        model=host.model_id,
        processing_ms=int((time.perf_counter() - started) * 1000),
    )


async def read_capped(upload: UploadFile, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(UPLOAD_CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLarge(f"The upload exceeds the node's limit of {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)

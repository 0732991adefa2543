"""The node's HTTP service: ``create_app(settings)``."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from inference.audio import decode_audio, duration_seconds
from inference.config import InferenceSettings
from inference.engines.base import Engine
from inference.engines.registry import build_engine, parse_model_specs
from inference.errors import FileTooLarge, InferenceError, Unauthorized
from inference.host import ModelPool
from inference.protocol import (
    LIVE_PATH,
    MODELS_PATH,
    READY_PATH,
    TRANSCRIBE_PATH,
    ErrorCode,
    ModelList,
    TranscribeParams,
    TranscriptionResult,
)

UPLOAD_CHUNK_BYTES = 1024 * 1024


def error_response(status_code: int, code: str, message: str, error_type: str) -> JSONResponse:
    return JSONResponse(
        status_code=status_code,
        content={"error": {"message": message, "type": error_type, "code": code}},
    )


def create_app(settings: InferenceSettings, engines: list[Engine] | None = None) -> FastAPI:
    """The node app; ``engines`` overrides what ``settings.models`` would build."""
    if engines is None:
        engines = [
            build_engine(spec, device=settings.device, hub=settings.hub)
            for spec in parse_model_specs(settings.models)
        ]
    pool = ModelPool(engines)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Load in the background: /health/live answers at once, /health/ready once warmed.
        pool.start_loading()
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="asr-billing-gateway inference node", lifespan=lifespan)
    app.state.pool = pool
    app.state.settings = settings

    @app.exception_handler(InferenceError)
    async def handle_inference_error(_request: Request, error: InferenceError) -> JSONResponse:
        return error_response(error.status_code, error.code, error.message, error.error_type)

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
        if not settings.node_secret:
            return
        presented = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented.encode(), settings.node_secret.encode()):
            raise Unauthorized("This node requires the shared node secret as a bearer token.")

    @app.get(LIVE_PATH)
    async def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(READY_PATH)
    async def ready() -> JSONResponse:
        """Every model is loaded and warmed."""
        models = [model.model_dump() for model in pool.models()]
        if pool.ready:
            return JSONResponse({"status": "ready", "models": models})
        status = "failed" if pool.error else "loading"
        return JSONResponse(
            status_code=503, content={"status": status, "error": pool.error, "models": models}
        )

    @app.get(MODELS_PATH, dependencies=[Depends(require_node_secret)])
    async def list_models() -> ModelList:
        """Models this node serves, with their capabilities."""
        return ModelList(data=pool.models())

    @app.post(TRANSCRIBE_PATH, dependencies=[Depends(require_node_secret)])
    async def transcribe(
        file: Annotated[UploadFile, File()],
        model: Annotated[str | None, Form()] = None,
        language: Annotated[str, Form()] = "auto",
        hotwords: Annotated[str | None, Form()] = None,
        word_timestamps: Annotated[bool, Form()] = False,
        itn: Annotated[bool, Form()] = True,
    ) -> TranscriptionResult:
        """Transcribe one audio file into the canonical result."""
        params = TranscribeParams(
            model=model or None,
            language=language or "auto",
            hotwords=hotwords or None,
            word_timestamps=word_timestamps,
            itn=itn,
        )
        host = pool.host_for(params.model)
        started = time.perf_counter()
        data = await read_capped(file, settings.max_upload_bytes)
        audio = await anyio.to_thread.run_sync(decode_audio, data)
        output = await host.transcribe(audio, params)
        return TranscriptionResult(
            text=output.text,
            language=output.language,
            duration=duration_seconds(audio),
            segments=output.segments,
            model=host.engine.model_id,
            processing_ms=int((time.perf_counter() - started) * 1000),
        )

    return app


async def read_capped(upload: UploadFile, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(UPLOAD_CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLarge(f"The upload exceeds the node's limit of {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)

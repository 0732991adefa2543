"""``POST /v1/audio/transcriptions``, compatible with OpenAI's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response

from gateway.billed.call import BilledCallDep
from gateway.billed.dispatch import Billed
from gateway.billed.responses import charge_headers, usage_body
from gateway.formats import (
    MEDIA_TYPES,
    parse_granularities,
    parse_response_format,
    render_body,
)
from gateway.transcriptions.schemas import TranscriptionInput
from gateway.transcriptions.service import read_upload, resolve_model, transcribe
from inference.protocol import TranscriptionResult

router = APIRouter()


def billing_headers(billed: Billed[TranscriptionResult]) -> dict[str, str]:
    return charge_headers(billed.charge, cached=billed.cached)


@router.post("/v1/audio/transcriptions", response_model=None)
async def create_transcription(
    call: BilledCallDep,
    file: Annotated[UploadFile, File(description="The audio file to transcribe.")],
    model: Annotated[str, Form(description="Model id; whisper-1 maps to the default.")],
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form(description="Passed to the model as hotwords.")] = None,
    response_format: Annotated[str | None, Form()] = None,
    temperature: Annotated[
        float | None,
        Form(ge=0, le=1, description="Sampling temperature; 0 decodes by beam search."),
    ] = None,
    timestamp_granularities: Annotated[
        list[str] | None, Form(alias="timestamp_granularities[]")
    ] = None,
) -> Response:
    """Transcribe audio into the input language (OpenAI-compatible), billed per output token."""
    output_format = parse_response_format(response_format)
    granularities = parse_granularities(timestamp_granularities, output_format)
    audio = await read_upload(file, call.settings.max_upload_bytes)
    request = TranscriptionInput(
        audio=audio,
        filename=file.filename or "audio",
        content_type=file.content_type or "application/octet-stream",
        model=resolve_model(model, call.settings),
        language=language or "auto",
        prompt=prompt,
        granularities=granularities,
        temperature=temperature,
    )

    def render(billed: Billed[TranscriptionResult]) -> Response:
        body = render_body(
            billed.result, output_format, set(granularities), usage_body(billed.charge)
        )
        headers = billing_headers(billed)
        if isinstance(body, dict):
            return JSONResponse(body, headers=headers)
        return Response(body, media_type=MEDIA_TYPES[output_format], headers=headers)

    return await transcribe(call, request, render)

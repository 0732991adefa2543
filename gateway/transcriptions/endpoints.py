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
    TEXT_MEDIA_TYPES,
    ResponseFormat,
    parse_granularities,
    render_body,
)
from gateway.languages import AUTO, Language
from gateway.openapi import BILLED_ERRORS, BILLING_HEADERS, text_content
from gateway.transcriptions.schemas import (
    GranularitiesForm,
    ModelForm,
    PromptForm,
    TemperatureForm,
    TranscriptionInput,
    TranscriptionJson,
    TranscriptionVerboseJson,
)
from gateway.transcriptions.service import read_upload, resolve_model, transcribe
from inference.protocol import TranscriptionResult

router = APIRouter()


def billing_headers(billed: Billed[TranscriptionResult]) -> dict[str, str]:
    return charge_headers(billed.charge, cached=billed.cached)


@router.post(
    "/v1/audio/transcriptions",
    response_model=None,
    responses={
        200: {
            "description": "The transcript in ``response_format``: JSON for json and "
            "verbose_json, text for text, srt and vtt.",
            "model": TranscriptionJson | TranscriptionVerboseJson,
            "content": text_content(*TEXT_MEDIA_TYPES),
            "headers": BILLING_HEADERS,
        },
        **BILLED_ERRORS,
    },
)
async def create_transcription(
    call: BilledCallDep,
    file: Annotated[
        UploadFile,
        File(description="The audio file: wav, mp3, m4a, mp4, webm, ogg or flac."),
    ],
    model: ModelForm,
    language: Annotated[Language, Form()] = AUTO,
    prompt: PromptForm = "",
    response_format: Annotated[ResponseFormat, Form()] = ResponseFormat.json,
    temperature: TemperatureForm = None,
    timestamp_granularities: GranularitiesForm = None,
) -> Response:
    """Transcribe audio into the input language (OpenAI-compatible), billed per output token."""
    output_format = response_format
    granularities = parse_granularities(timestamp_granularities, output_format)
    audio = await read_upload(file, call.settings.max_upload_bytes)
    request = TranscriptionInput(
        audio=audio,
        filename=file.filename or "audio",
        content_type=file.content_type or "application/octet-stream",
        model=resolve_model(model, call.settings),
        language=language,
        prompt=prompt or None,
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

"""``POST /v1/audio/transcriptions``, compatible with OpenAI's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response

from gateway.billed.call import BilledCallDep
from gateway.billed.dispatch import Billed
from gateway.billed.responses import charge_headers, usage_body
from gateway.billed.route import BilledFormRoute
from gateway.errors import InvalidRequest
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
from gateway.transcriptions.service import (
    read_upload,
    resolve_model,
    stream_transcription,
    transcribe,
)
from inference.protocol import TranscriptionResult

# The key and its limits are checked before the upload is parsed (gateway.billed.route).
router = APIRouter(route_class=BilledFormRoute)
STREAMABLE_FORMATS = (ResponseFormat.json, ResponseFormat.text)


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
            "content": {
                **text_content(*TEXT_MEDIA_TYPES),
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": 'data: {"type": "transcript.text.delta", "delta": "Hello"}\n\n'
                    'data: {"type": "transcript.text.done", "text": "Hello", "usage": {...}}\n\n',
                },
            },
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
    stream: Annotated[
        bool,
        Form(
            description="Send the transcript as Server-Sent Events while it is decoded "
            "(`transcript.text.delta`, then `transcript.text.done` with `usage`); json and "
            "text only. A stream is billed for the text it sent."
        ),
    ] = False,
) -> Response:
    """Transcribe audio into the input language (OpenAI-compatible), billed per output token."""
    output_format = response_format
    if stream and output_format not in STREAMABLE_FORMATS:
        raise InvalidRequest(
            f"stream=true sends text as it is decoded; response_format '{output_format}' "
            "cannot be streamed (use json or text).",
            param="response_format",
        )
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

    if stream:
        return await stream_transcription(call, request)

    def render(billed: Billed[TranscriptionResult]) -> Response:
        body = render_body(
            billed.result, output_format, set(granularities), usage_body(billed.charge)
        )
        headers = billing_headers(billed)
        if isinstance(body, dict):
            return JSONResponse(body, headers=headers)
        return Response(body, media_type=MEDIA_TYPES[output_format], headers=headers)

    return await transcribe(call, request, render)

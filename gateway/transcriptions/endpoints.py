"""``POST /v1/audio/transcriptions``, compatible with OpenAI's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response

from billing.usage.schemas import UsageCharge
from gateway.errors import InvalidRequest
from gateway.formats import MEDIA_TYPES, ResponseFormat, TimestampGranularity, render_body
from gateway.transcriptions.billed import BilledCallDep
from gateway.transcriptions.schemas import BilledTranscription, TranscriptionInput
from gateway.transcriptions.service import (
    read_upload,
    resolve_model,
)

router = APIRouter()


def parse_response_format(value: str | None) -> ResponseFormat:
    try:
        return ResponseFormat(value or ResponseFormat.json)
    except ValueError:
        allowed = ", ".join(f"'{member.value}'" for member in ResponseFormat)
        raise InvalidRequest(
            f"Invalid value for 'response_format': '{value}'. Supported values are: {allowed}.",
            param="response_format",
            code="invalid_value",
        ) from None


def parse_granularities(
    values: list[str] | None, response_format: ResponseFormat
) -> frozenset[TimestampGranularity]:
    granularities: set[TimestampGranularity] = set()
    for value in values or []:
        try:
            granularities.add(TimestampGranularity(value))
        except ValueError:
            raise InvalidRequest(
                f"Invalid value for 'timestamp_granularities[]': '{value}'. "
                "Supported values are: 'word', 'segment'.",
                param="timestamp_granularities",
                code="invalid_value",
            ) from None
    if granularities and response_format is not ResponseFormat.verbose_json:
        raise InvalidRequest(
            "timestamp_granularities requires response_format 'verbose_json'.",
            param="timestamp_granularities",
            code="invalid_value",
        )
    return frozenset(granularities)


def usage_body(charge: UsageCharge) -> dict[str, Any]:
    return {
        "type": "tokens",
        "input_tokens": 0,
        "output_tokens": charge.billed_tokens,
        "total_tokens": charge.billed_tokens,
        "seconds": charge.audio_ms / 1000,
        "token_unit": charge.token_unit,
        "cost_micros": charge.cost_micros,
        "currency": charge.currency,
    }


def charge_headers(charge: UsageCharge) -> dict[str, str]:
    return {
        "x-billing-output-tokens": str(charge.billed_tokens),
        "x-billing-cost-micros": str(charge.cost_micros),
        "x-billing-currency": charge.currency,
    }


def billing_headers(billed: BilledTranscription) -> dict[str, str]:
    return {**charge_headers(billed.charge), "x-cache": "hit" if billed.cached else "miss"}


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
    transcription = TranscriptionInput(
        audio=audio,
        filename=file.filename or "audio",
        content_type=file.content_type or "application/octet-stream",
        model=resolve_model(model, call.settings),
        language=language or "auto",
        prompt=prompt,
        granularities=granularities,
        temperature=temperature,
    )

    def render(billed: BilledTranscription) -> Response:
        body = render_body(
            billed.result, output_format, set(granularities), usage_body(billed.charge)
        )
        headers = billing_headers(billed)
        if isinstance(body, dict):
            return JSONResponse(body, headers=headers)
        return Response(body, media_type=MEDIA_TYPES[output_format], headers=headers)

    return await call.transcribe(transcription, render, {"response_format": output_format.value})

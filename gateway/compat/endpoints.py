"""``POST /asr`` and ``POST /detect-language`` (whisper-asr-webservice) and
``POST /api/transcribe`` (JSON with base64 audio): authenticated, rate-limited and billed like
``/v1/audio/transcriptions``, rendered from the same canonical result."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.billed.call import BilledCallDep
from gateway.billed.dispatch import Billed
from gateway.billed.responses import charge_headers
from gateway.compat.formats import AsrOutput, language_name, render_asr
from gateway.compat.pcm import wav_from_pcm16
from gateway.compat.service import detect_language as detect_and_bill
from gateway.errors import FileTooLarge, InvalidAudio, InvalidRequest
from gateway.formats import TimestampGranularity
from gateway.languages import AUTO, Language
from gateway.openapi import BILLED_ERRORS, BILLING_HEADERS, text_content
from gateway.transcriptions.schemas import MAX_MODEL_LENGTH, MAX_PROMPT_LENGTH, TranscriptionInput
from gateway.transcriptions.service import read_upload, resolve_model, transcribe
from inference.protocol import LanguageDetection, TranscriptionResult

router = APIRouter(tags=["compatible APIs"])


async def read_audio_file(upload: UploadFile, encode: bool, max_bytes: int) -> bytes:
    audio = await read_upload(upload, max_bytes)
    return audio if encode else wav_from_pcm16(audio)


def upload_type(upload: UploadFile, encode: bool) -> str:
    return (upload.content_type or "application/octet-stream") if encode else "audio/wav"


class WhisperAsrJson(BaseModel):
    """``output=json``: whisper's result dictionary."""

    text: str
    segments: list[dict[str, Any]]
    language: str


class DetectedLanguage(BaseModel):
    detected_language: str
    language_code: str
    confidence: float | None


class JsonTranscriptionResult(BaseModel):
    text: str
    language: str


ModelQuery = Annotated[
    str | None,
    Query(max_length=MAX_MODEL_LENGTH, description="Model id [default: the default]."),
]


@router.post(
    "/asr",
    response_model=None,
    responses={
        200: {
            "description": "The transcript: JSON for output=json, text for txt, vtt, srt, tsv.",
            "model": WhisperAsrJson,
            "content": text_content("text/plain"),
            "headers": BILLING_HEADERS,
        },
        **BILLED_ERRORS,
    },
)
async def asr(
    call: BilledCallDep,
    audio_file: Annotated[UploadFile, File(description="The audio or video file.")],
    encode: Annotated[
        bool, Query(description="false: the body is raw 16 kHz mono 16-bit PCM")
    ] = True,
    task: Literal["transcribe", "translate"] = "transcribe",
    language: Annotated[Language | None, Query()] = None,
    initial_prompt: Annotated[
        str | None, Query(max_length=MAX_PROMPT_LENGTH, description="Passed as hotwords.")
    ] = None,
    vad_filter: Annotated[bool, Query(description="Accepted; long audio is cut by VAD.")] = False,
    word_timestamps: bool = False,
    output: AsrOutput = AsrOutput.txt,
    model: ModelQuery = None,
) -> Response:
    """Transcribe (whisper-asr-webservice compatible), billed per output token."""
    del vad_filter
    if task == "translate":
        raise InvalidRequest(
            "The task 'translate' is not offered: the models here transcribe in the spoken "
            "language.",
            param="task",
            code="invalid_value",
        )
    audio = await read_audio_file(audio_file, encode, call.settings.max_upload_bytes)
    filename = audio_file.filename or "audio"
    request = TranscriptionInput(
        audio=audio,
        filename=filename if encode else f"{filename}.wav",
        content_type=upload_type(audio_file, encode),
        model=resolve_model(model or "", call.settings),
        language=language or "auto",
        prompt=initial_prompt,
        granularities=frozenset({TimestampGranularity.word} if word_timestamps else ()),
    )

    def render(billed: Billed[TranscriptionResult]) -> Response:
        headers = {
            **charge_headers(billed.charge, cached=billed.cached),
            "Asr-Engine": billed.result.model,
            "Content-Disposition": f'attachment; filename="{quote(filename)}.{output.value}"',
        }
        body = render_asr(billed.result, output)
        if isinstance(body, dict):
            return JSONResponse(body, headers=headers)
        return Response(body, media_type="text/plain; charset=utf-8", headers=headers)

    return await transcribe(call, request, render)


@router.post(
    "/detect-language",
    response_model=None,
    responses={
        200: {"model": DetectedLanguage, "headers": BILLING_HEADERS},
        **BILLED_ERRORS,
    },
)
async def detect_language(
    call: BilledCallDep,
    audio_file: Annotated[UploadFile, File(description="The audio or video file.")],
    encode: bool = True,
    model: ModelQuery = None,
) -> Response:
    """The spoken language (whisper-asr-webservice compatible); billed for the language code
    it returns, in the plan's token unit."""
    audio = await read_audio_file(audio_file, encode, call.settings.max_upload_bytes)
    resolved = resolve_model(model or "", call.settings)

    def render(billed: Billed[LanguageDetection]) -> Response:
        detection = billed.result
        body = {
            "detected_language": language_name(detection.language),
            "language_code": detection.language,
            # The models here name a language without a probability.
            "confidence": None,
        }
        return JSONResponse(body, headers=charge_headers(billed.charge, cached=billed.cached))

    filename = audio_file.filename or "audio"
    content_type = upload_type(audio_file, encode)
    return await detect_and_bill(call, audio, filename, content_type, resolved, render)


class JsonTranscription(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"file": "UklGRiQAAABXQVZFZm10IBAAAAABAAEA…", "language": "en"}]
        },
    )

    file: str = Field(description="The audio file, base64-encoded.")
    language: Language = AUTO
    model: str | None = Field(default=None, max_length=MAX_MODEL_LENGTH)
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_LENGTH)


@router.post(
    "/api/transcribe",
    response_model=None,
    responses={
        200: {"model": JsonTranscriptionResult, "headers": BILLING_HEADERS},
        **BILLED_ERRORS,
    },
)
async def json_transcribe(body: JsonTranscription, call: BilledCallDep) -> Response:
    """Transcribe base64 audio sent as JSON: ``{"file", "language"}`` → ``{"text", "language"}``,
    billed per output token."""
    try:
        audio = base64.b64decode(body.file, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAudio("'file' is not valid base64.", param="file") from None
    if not audio:
        raise InvalidAudio("The audio file is empty (0 bytes).", param="file")
    limit = call.settings.max_upload_bytes
    if len(audio) > limit:
        raise FileTooLarge(f"The decoded file exceeds the limit of {limit} bytes.", param="file")
    request = TranscriptionInput(
        audio=audio,
        filename="audio",
        content_type="application/octet-stream",
        model=resolve_model(body.model or "", call.settings),
        language=body.language or "auto",
        prompt=body.prompt,
        granularities=frozenset(),
    )

    def render(billed: Billed[TranscriptionResult]) -> Response:
        payload: dict[str, Any] = {"text": billed.result.text, "language": billed.result.language}
        return JSONResponse(payload, headers=charge_headers(billed.charge, cached=billed.cached))

    return await transcribe(call, request, render)

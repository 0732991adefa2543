"""Wire format between the gateway and inference nodes (pydantic only: no torch here).

``POST /v1/transcribe`` takes multipart form data: the audio as ``file`` plus the fields of
``TranscribeParams``; it answers a ``TranscriptionResult``, the canonical shape every response
format of the gateway is rendered from. Times are seconds. Errors come as
``{"error": {"message", "type", "code"}}`` with one of the ``ErrorCode`` values.

``max_audio_ms`` (form field of ``POST /v1/transcribe``, ``/v1/transcribe/stream`` and
``/v1/detect-language``; optional, an integer >= 1): the most audio, in milliseconds, the file
may decode to. The gateway sends the length it measured from the file's packets plus a margin
(``gateway.nodes.wire.decode_allowance_ms``). The node stops decoding the moment the file
passes it and answers 400 ``invalid_audio`` (the file holds more audio than its packets
declare); language detection, which needs the first 30 s only, stops quietly at 30 s when that
comes first. Without it the node's own ``INFERENCE_MAX_AUDIO_SECONDS`` is the limit (413
``audio_too_long``), checked the same way while decoding. Either way the node accepts only the
containers of ``inference.containers``.

``POST /v1/transcribe/stream`` takes the same form and answers NDJSON, one event per line, as
the node decodes: ``{"type": "delta", "text"}`` for each stretch of speech (the deltas, joined,
are the final text exactly), then ``{"type": "result", "result": TranscriptionResult}``; a
failure after the first line is ``{"type": "error", "error": {"message", "type", "code"}}``.

``WebSocket /v1/transcribe/live`` decodes live audio on an online model (``ModelInfo.streaming``):
the first text frame is the ``TranscribeParams`` as JSON, then binary frames of 16-bit
little-endian PCM, mono, 16 kHz, and ``{"type": "end"}`` when the audio ends. The node answers
``{"type": "ready"}`` once the stream is open, ``{"type": "delta", "text"}`` as each 600 ms
chunk is decoded and ``{"type": "done", "text"}`` (the deltas joined) at the end, then closes
with 1000; a failure is ``{"type": "error", "error": {...}}`` and a close with 1013 (retry
elsewhere: overloaded, not ready, draining), 1008 (refused) or 1011.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

TRANSCRIBE_PATH = "/v1/transcribe"
TRANSCRIBE_STREAM_PATH = "/v1/transcribe/stream"
TRANSCRIBE_LIVE_PATH = "/v1/transcribe/live"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
DETECT_LANGUAGE_PATH = "/v1/detect-language"
MAX_AUDIO_MS_FIELD = "max_audio_ms"
MODELS_PATH = "/v1/models"
READY_PATH = "/health/ready"
LIVE_PATH = "/health/live"


class ErrorCode(StrEnum):
    invalid_audio = "invalid_audio"
    model_not_found = "model_not_found"
    unsupported_language = "unsupported_language"
    language_detection_unsupported = "language_detection_unsupported"
    live_unsupported = "live_transcription_unsupported"
    invalid_request = "invalid_request"
    unauthorized = "unauthorized"
    not_ready = "node_not_ready"
    file_too_large = "file_too_large"
    audio_too_long = "audio_too_long"
    node_overloaded = "node_overloaded"
    node_draining = "node_draining"
    client_closed_request = "client_closed_request"
    internal_error = "internal_error"


class TranscribeParams(BaseModel):
    """Per-request parameters; every one of them may change the transcript."""

    model: str | None = Field(default=None, description="model id; the node default when empty")
    language: str = Field(default="auto", description="ISO 639-1 code or 'auto'")
    hotwords: str | None = Field(default=None, description="biasing words (OpenAI `prompt`)")
    word_timestamps: bool = False
    itn: bool = True
    temperature: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="sampling temperature (OpenAI `temperature`); None or 0 decodes greedily "
        "or by beam search, engines without sampling ignore it",
    )


class Word(BaseModel):
    word: str
    start: float
    end: float


class Segment(BaseModel):
    """A stretch of the transcript. The decoding statistics are what the engine measured (None
    when an engine does not produce them), never filled in with made-up values."""

    start: float
    end: float
    text: str
    words: list[Word] | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    temperature: float | None = None
    tokens: list[int] | None = None


class TranscriptionResult(BaseModel):
    text: str
    language: str
    duration: float = Field(ge=0, description="audio length in seconds")
    segments: list[Segment]
    model: str
    processing_ms: int = Field(ge=0)


class LanguageDetection(BaseModel):
    language: str
    model: str
    duration: float = Field(ge=0, description="seconds of audio examined")


class ModelInfo(BaseModel):
    id: str
    engine: str
    languages: list[str]
    timestamps: bool
    word_timestamps: bool
    hotwords: bool
    # An online model: decodes live audio chunk by chunk (TRANSCRIBE_LIVE_PATH).
    streaming: bool = False
    loaded: bool = False


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelInfo]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str


class ErrorEnvelope(BaseModel):
    error: ErrorDetail

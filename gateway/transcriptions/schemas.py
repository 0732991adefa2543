"""What a transcription request carries through the service, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Form
from pydantic import BaseModel

from gateway.formats import TimestampGranularity

# A model id, and OpenAI's ``prompt`` (which the engines take as hotwords).
MAX_MODEL_LENGTH = 128
MAX_PROMPT_LENGTH = 4096

# The form fields OpenAI's transcription request has, as the synchronous route and the jobs
# route both take them.
ModelForm = Annotated[
    str,
    Form(
        min_length=1,
        max_length=MAX_MODEL_LENGTH,
        description="Model id; whisper-1 and gpt-4o-transcribe map to the default.",
        examples=["whisper-1"],
    ),
]
PromptForm = Annotated[
    str, Form(max_length=MAX_PROMPT_LENGTH, description="Passed to the model as hotwords.")
]
TemperatureForm = Annotated[
    float | None,
    Form(ge=0, le=1, description="Sampling temperature; 0 decodes by beam search."),
]
GranularitiesForm = Annotated[
    list[TimestampGranularity] | None,
    Form(
        alias="timestamp_granularities[]",
        description="word and/or segment; needs response_format verbose_json.",
    ),
]


@dataclass(frozen=True)
class TranscriptionInput:
    audio: bytes
    filename: str
    content_type: str
    model: str
    language: str
    prompt: str | None
    granularities: frozenset[TimestampGranularity]
    # Reaches the engine and is part of the cache key; None and 0 both mean beam search.
    temperature: float | None = None


class TokenUsage(BaseModel):
    """OpenAI's ``usage`` of a transcription billed by tokens, plus the audio seconds and the
    cost the ledger recorded."""

    type: Literal["tokens"] = "tokens"
    input_tokens: int
    output_tokens: int
    total_tokens: int
    seconds: float
    token_unit: str
    cost_micros: int
    currency: str


class TranscriptionJson(BaseModel):
    """``response_format=json`` (OpenAI's ``CreateTranscriptionResponseJson``)."""

    text: str
    usage: TokenUsage


class TranscriptionWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionSegment(BaseModel):
    """OpenAI's segment; decoder statistics are null where the engine has none."""

    id: int
    start: float
    end: float
    text: str
    seek: int | None = None
    tokens: list[int] | None = None
    temperature: float | None = None
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


class TranscriptionVerboseJson(BaseModel):
    """``response_format=verbose_json`` (OpenAI's ``CreateTranscriptionResponseVerboseJson``);
    ``segments`` and ``words`` as ``timestamp_granularities[]`` asks."""

    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment] | None = None
    words: list[TranscriptionWord] | None = None
    usage: TokenUsage

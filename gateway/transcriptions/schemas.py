"""What a transcription request carries through the service, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.formats import TimestampGranularity


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

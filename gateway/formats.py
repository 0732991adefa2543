"""Rendering the canonical result in every response format the customer API offers."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from gateway.errors import InvalidRequest
from inference.protocol import Segment, TranscriptionResult


class ResponseFormat(StrEnum):
    json = "json"
    text = "text"
    srt = "srt"
    vtt = "vtt"
    verbose_json = "verbose_json"


class TimestampGranularity(StrEnum):
    word = "word"
    segment = "segment"


MEDIA_TYPES: dict[ResponseFormat, str] = {
    ResponseFormat.json: "application/json",
    ResponseFormat.verbose_json: "application/json",
    ResponseFormat.text: "text/plain; charset=utf-8",
    ResponseFormat.srt: "application/x-subrip; charset=utf-8",
    ResponseFormat.vtt: "text/vtt; charset=utf-8",
}

# The text media types of the formats above, for the OpenAPI document.
TEXT_MEDIA_TYPES = ("text/plain", "application/x-subrip", "text/vtt")

# OpenAI's verbose_json names the language in English words.
LANGUAGE_NAMES = {
    "en": "english",
    "zh": "chinese",
    "yue": "cantonese",
    "ja": "japanese",
    "ko": "korean",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "ru": "russian",
}


# OpenAI's per-segment decoder statistics: real values when an engine reports them (Whisper
# does), null when it does not (never invented).
SEGMENT_STATISTICS = (
    "seek",
    "tokens",
    "temperature",
    "avg_logprob",
    "compression_ratio",
    "no_speech_prob",
)


def cues(result: TranscriptionResult) -> list[Segment]:
    """Subtitle cues: the segments, or one cue over the whole audio when there are none."""
    if result.segments:
        return [segment for segment in result.segments if segment.text.strip()]
    if result.text.strip():
        return [Segment(start=0.0, end=result.duration, text=result.text)]
    return []


def _timestamp(seconds: float, separator: str) -> str:
    milliseconds = max(0, round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole_seconds, milliseconds = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{separator}{milliseconds:03d}"


def render_srt(result: TranscriptionResult) -> str:
    blocks = [
        f"{index}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n"
        f"{cue.text.strip()}\n"
        for index, cue in enumerate(cues(result), start=1)
    ]
    return "\n".join(blocks)


def render_vtt(result: TranscriptionResult) -> str:
    blocks = [
        f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n{cue.text.strip()}\n"
        for cue in cues(result)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render_verbose_json(
    result: TranscriptionResult,
    granularities: set[TimestampGranularity],
    usage: dict[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(result.language, result.language),
        "duration": result.duration,
        "text": result.text,
    }
    if not granularities or TimestampGranularity.segment in granularities:
        body["segments"] = [
            {
                "id": index,
                "start": segment.start,
                "end": segment.end,
                "text": segment.text,
                # Decoder statistics only where the engine produced them; null otherwise.
                **{name: getattr(segment, name, None) for name in SEGMENT_STATISTICS},
            }
            for index, segment in enumerate(result.segments)
        ]
    if TimestampGranularity.word in granularities:
        body["words"] = [
            {"word": word.word, "start": word.start, "end": word.end}
            for segment in result.segments
            for word in segment.words or []
        ]
    body["usage"] = usage
    return body


def render_body(
    result: TranscriptionResult,
    response_format: ResponseFormat,
    granularities: set[TimestampGranularity],
    usage: dict[str, Any],
) -> str | dict[str, Any]:
    if response_format is ResponseFormat.json:
        return {"text": result.text, "usage": usage}
    if response_format is ResponseFormat.verbose_json:
        return render_verbose_json(result, granularities, usage)
    if response_format is ResponseFormat.srt:
        return render_srt(result)
    if response_format is ResponseFormat.vtt:
        return render_vtt(result)
    return result.text


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
    values: list[str] | list[TimestampGranularity] | None, response_format: ResponseFormat
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

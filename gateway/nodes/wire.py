"""The wire to a node: the form a transcription sends, and reading what comes back."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.nodes.client import NodeResponse
from inference.protocol import MAX_AUDIO_MS_FIELD, ModelInfo, TranscribeParams

MODEL_LIST = TypeAdapter(list[ModelInfo])
# What a file may decode to beyond the length measured from its packets: 500 ms plus 1 %.
# Measuring and decoding agree to a few tens of milliseconds on every accepted container (Vorbis
# block overlap, MP3 and AAC encoder padding, millisecond timestamps); the margin keeps honest
# files clear of the node's refusal while a file that decodes to more is stopped at once.
DECODE_MARGIN_MS = 500
DECODE_MARGIN_PER_CENT = 1


def decode_allowance_ms(audio_ms: int) -> int:
    """The most a file measured at ``audio_ms`` may decode to (the node's ``max_audio_ms``)."""
    return audio_ms + DECODE_MARGIN_MS + math.ceil(audio_ms * DECODE_MARGIN_PER_CENT / 100)


def decode_form(audio_ms: int | None) -> dict[str, str]:
    """The ``max_audio_ms`` field for a file measured at ``audio_ms`` (none when unmeasured)."""
    return {} if audio_ms is None else {MAX_AUDIO_MS_FIELD: str(decode_allowance_ms(audio_ms))}


def transcribe_form(params: TranscribeParams, audio_ms: int | None = None) -> dict[str, str]:
    """The node's form for ``params``, and the most the file may decode to when it was measured
    at ``audio_ms``."""
    form = {
        "language": params.language,
        "word_timestamps": "true" if params.word_timestamps else "false",
        "itn": "true" if params.itn else "false",
        **decode_form(audio_ms),
    }
    if params.model:
        form["model"] = params.model
    if params.hotwords:
        form["hotwords"] = params.hotwords
    if params.temperature:
        form["temperature"] = repr(params.temperature)
    return form


def describe(error: Exception) -> str:
    detail = str(error)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def json_object(response: NodeResponse) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def parse_models(raw: object) -> list[ModelInfo] | None:
    try:
        return MODEL_LIST.validate_python(raw) if isinstance(raw, list) else None
    except ValidationError:
        return None


def retry_after_header(response: NodeResponse) -> list[float]:
    try:
        return [max(0.0, float(response.headers["retry-after"]))]
    except (KeyError, ValueError):
        return []


@dataclass(frozen=True)
class MultipartBody:
    """A request body built once per dispatch and sent as one piece to whichever node takes it
    (httpx's ``files=`` would encode it again per attempt, in many small writes)."""

    content: bytes
    content_type: str


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")


def multipart_body(
    form: dict[str, str], field: str, filename: str, data: bytes, content_type: str
) -> MultipartBody:
    """``multipart/form-data`` with the text fields of ``form`` and one file."""
    boundary = secrets.token_hex(16)
    parts: list[bytes] = []
    for name, value in form.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(field)}"; '
        f'filename="{_quoted(filename)}"\r\n'
        f"Content-Type: {content_type.replace(chr(13), '').replace(chr(10), '')}\r\n\r\n".encode()
    )
    parts.append(data)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return MultipartBody(b"".join(parts), f"multipart/form-data; boundary={boundary}")

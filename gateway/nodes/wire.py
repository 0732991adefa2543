"""The wire to a node: the form a transcription sends, and reading what comes back."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.nodes.client import NodeResponse
from inference.protocol import ModelInfo, TranscribeParams

MODEL_LIST = TypeAdapter(list[ModelInfo])


def transcribe_form(params: TranscribeParams) -> dict[str, str]:
    form = {
        "language": params.language,
        "word_timestamps": "true" if params.word_timestamps else "false",
        "itn": "true" if params.itn else "false",
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

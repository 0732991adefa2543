"""The wire to a node: the form a transcription sends, and reading what comes back."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

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
    return form


def describe(error: Exception) -> str:
    detail = str(error)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def json_object(response: httpx.Response) -> dict[str, Any]:
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


def retry_after_header(response: httpx.Response) -> list[float]:
    try:
        return [max(0.0, float(response.headers["retry-after"]))]
    except (KeyError, ValueError):
        return []

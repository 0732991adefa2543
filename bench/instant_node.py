"""An inference node stand-in that answers at once, so a benchmark times only the gateway.

It speaks the node's wire format (``inference/protocol.py``): ``POST /v1/transcribe`` reads the
whole upload and answers one fixed canonical ``TranscriptionResult`` (and ``POST
/v1/audio/transcriptions`` the same text as OpenAI's JSON, as an upstream of other gateways); ``POST
/v1/detect-language`` a fixed ``LanguageDetection``; ``GET /v1/models`` and ``GET
/health/ready`` the one model it pretends to serve. Raw ASGI, no framework, no decoding.

    python -m uvicorn bench.instant_node:app --port 8001 --no-access-log
"""

from __future__ import annotations

import json

from starlette.types import Receive, Scope, Send

from gateway.config import GatewaySettings
from inference.protocol import (
    DETECT_LANGUAGE_PATH,
    LIVE_PATH,
    MODELS_PATH,
    READY_PATH,
    TRANSCRIBE_PATH,
    LanguageDetection,
    ModelInfo,
    ModelList,
    Segment,
    TranscriptionResult,
)

# The model the gateway sends whisper-1 to when nothing overrides it.
MODEL = str(GatewaySettings.model_fields["default_model"].default)
MODEL_INFO = ModelInfo(
    id=MODEL,
    engine="instant",
    languages=["en"],
    timestamps=True,
    word_timestamps=False,
    hotwords=False,
    loaded=True,
)
RESULT = TranscriptionResult(
    text="the weather is nice today",
    language="en",
    duration=3.2,
    segments=[Segment(start=0.0, end=3.2, text="the weather is nice today")],
    model=MODEL,
    processing_ms=0,
)
DETECTION = LanguageDetection(language="en", model=MODEL, duration=3.2)

ANSWERS: dict[tuple[str, str], bytes] = {
    ("POST", TRANSCRIBE_PATH): RESULT.model_dump_json().encode(),
    ("POST", DETECT_LANGUAGE_PATH): DETECTION.model_dump_json().encode(),
    ("GET", MODELS_PATH): ModelList(data=[MODEL_INFO]).model_dump_json().encode(),
    ("GET", READY_PATH): json.dumps(
        {"status": "ready", "models": [MODEL_INFO.model_dump()]}
    ).encode(),
    ("GET", LIVE_PATH): b'{"status": "ok"}',
    # The same answer in OpenAI's shape, for gateways that proxy OpenAI-compatible upstreams.
    ("POST", "/v1/audio/transcriptions"): json.dumps({"text": RESULT.text}).encode(),
}
NOT_FOUND = json.dumps(
    {"error": {"message": "not found", "type": "invalid_request_error", "code": "not_found"}}
).encode()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()  # startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    # Read the whole upload, as a node must before it can answer.
    more_body = True
    while more_body:
        message = await receive()
        more_body = message.get("more_body", False)
    body = ANSWERS.get((scope["method"], scope["path"]))
    status = 200 if body is not None else 404
    body = body if body is not None else NOT_FOUND
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

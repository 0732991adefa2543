"""Live transcription on an online model: ``WebSocket /v1/transcribe/live`` (see
``inference.protocol`` for the messages).

```
gateway                                              node
{"model", "language", ...}  (TranscribeParams) ──▶ open a live stream (or an error:
      ◀── {"type": "ready"}                          node_overloaded past max_streams, ...)
binary PCM16 16 kHz mono ───────────────────────▶ 600 ms chunks, each decoded in turn
      ◀── {"type": "delta", "text"}                  (the model's text for the chunk)
{"type": "end"} ────────────────────────────────▶ the rest decoded as the final piece
      ◀── {"type": "done", "text"}                   (the deltas joined), close 1000
      ◀── {"type": "error", "error": {...}}          then close: 1013 for a 503, else 1008/1011
```

The node reads the next frame only once the chunk before it is decoded, so a sender faster
than the model is held back by the socket. A gateway that goes away ends the stream (the piece
in flight is dropped).
"""

from __future__ import annotations

import json
import logging

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from inference.audio import SAMPLE_RATE
from inference.auth import check_node_secret
from inference.config import InferenceSettings
from inference.errors import (
    InferenceError,
    InvalidAudio,
    InvalidRequest,
    NodeDraining,
)
from inference.host import LiveStream, ModelPool
from inference.protocol import TRANSCRIBE_LIVE_PATH, TranscribeParams
from inference.shutdown import Drain, DrainState

logger = logging.getLogger(__name__)

# paraformer-zh-streaming decodes 600 ms chunks: sending it the same keeps each call whole.
CHUNK_SAMPLES = SAMPLE_RATE * 600 // 1000
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


def live_router(settings: InferenceSettings, pool: ModelPool, drain: Drain) -> APIRouter:
    router = APIRouter()

    @router.websocket(TRANSCRIBE_LIVE_PATH)
    async def transcribe_live(websocket: WebSocket) -> None:
        """Live audio in, the online model's text for each chunk out."""
        await websocket.accept()
        try:
            check_node_secret(settings, websocket.headers.get("authorization"))
            if drain.state is not DrainState.serving:
                raise NodeDraining("This node is shutting down; open the stream on another.")
            params = _params(await websocket.receive_text())
            host = pool.host_for(params.model)
            with host.open_live(params) as stream:
                await websocket.send_json({"type": "ready"})
                await _decode_until_end(websocket, stream)
        except WebSocketDisconnect:
            return
        except InferenceError as error:
            await _fail(websocket, error)
        except Exception as error:
            logger.exception("live transcription failed")
            await _fail(websocket, InferenceError(f"The live transcription failed: {error}"))

    return router


def _params(first: str) -> TranscribeParams:
    try:
        return TranscribeParams.model_validate_json(first)
    except ValidationError as error:
        raise InvalidRequest(f"The first message is the stream's parameters: {error}") from None


async def _decode_until_end(websocket: WebSocket, stream: LiveStream) -> None:
    pending = np.empty(0, dtype=np.float32)
    texts: list[str] = []
    heard = False  # a stream that sent no audio has nothing to decode
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            pcm = message["bytes"]
            if len(pcm) % 2:
                raise InvalidAudio("Live audio is 16-bit PCM: a frame had an odd length.")
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
            pending = np.concatenate([pending, samples])
            heard = heard or samples.size > 0
            while pending.size >= CHUNK_SAMPLES:
                chunk, pending = pending[:CHUNK_SAMPLES], pending[CHUNK_SAMPLES:]
                await _send_delta(websocket, texts, await stream.decode(chunk))
        elif _is_end(message.get("text")):
            if heard:
                await _send_delta(websocket, texts, await stream.decode(pending, is_final=True))
            await websocket.send_json({"type": "done", "text": "".join(texts)})
            await websocket.close(1000)
            return


def _is_end(text: str | None) -> bool:
    if text is None:
        return False
    try:
        return bool(json.loads(text).get("type") == "end")
    except (ValueError, AttributeError):
        raise InvalidRequest('Text frames after the first are {"type": "end"} only.') from None


async def _send_delta(websocket: WebSocket, texts: list[str], text: str) -> None:
    if text:
        delta = joined_piece(texts[-1] if texts else "", text)
        texts.append(delta)
        await websocket.send_json({"type": "delta", "text": delta})


def joined_piece(previous: str, text: str) -> str:
    """``text`` as the delta after ``previous``: two pieces of Latin script get a space between
    them, so the deltas joined keep the words apart (Chinese needs none)."""
    if previous and _word_end(previous[-1]) and _word_end(text[0]):
        return " " + text
    return text


def _word_end(character: str) -> bool:
    return character.isascii() and character.isalnum()


async def _fail(websocket: WebSocket, error: InferenceError) -> None:
    body = {"message": error.message, "type": error.error_type, "code": str(error.code)}
    code = (
        TRY_AGAIN_LATER
        if error.status_code == 503
        else INTERNAL_ERROR
        if error.status_code >= 500
        else POLICY_VIOLATION
    )
    try:
        await websocket.send_json({"type": "error", "error": body})
        await websocket.close(code, str(error.code))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass

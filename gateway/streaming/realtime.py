"""The realtime transcription session (``/v1/realtime?intent=transcription``): the part of
OpenAI's realtime protocol a transcription client needs, each committed item billed on its own.

```
client                                   gateway                                node
session.update / transcription_session.update ──▶ session.updated
input_audio_buffer.append (base64 pcm16) ──▶ server VAD ──▶ speech_started / speech_stopped
input_audio_buffer.commit (or VAD turn end,  ──▶ committed ──▶ hold the item's worst case
  or GATEWAY_REALTIME_MAX_ITEM_SECONDS)                        ──▶ POST /v1/transcribe ──▶
        ◀── ...transcription.delta (the transcript) ──▶ settled on what was sent ──▶
        ◀── ...transcription.completed (usage = the item's ledger row)
        ◀── ...transcription.failed (node failed, ledger unreachable: nothing billed)
        ◀── error + close 1008 (402)
an event larger than one item's audio ──▶ error message_too_large + close 1009 (frames.py)
```

Billing: one ledger row per committed item, through the streamed money sequence
(``gateway.billed.stream``): the item's transcript is billed once the client was sent it. An
item holds at most ``realtime_max_item_seconds`` of audio, so a session is reserved ahead that
much worst case at a time; an item whose hold does not fit ends the session with an
``insufficient_quota`` error (items before it stay billed). A client gone before an item's
transcript is sent is not billed for it: the session reads its client while items wait
(``inbox.py``), so a client that leaves is noticed at once and its item in flight dropped. A
ledger that cannot be reached fails the item (``ledger_unavailable``), not the session. Idle
time costs nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import anyio
from starlette.websockets import WebSocket

from billing.keys.schemas import AuthenticatedKey
from gateway import metrics
from gateway.billed.responses import usage_body
from gateway.config import GatewaySettings
from gateway.errors import GatewayError, QuotaExceeded
from gateway.languages import LANGUAGE_CODES
from gateway.streaming.frames import (
    MESSAGE_TOO_BIG,
    item_pcm_bytes,
    realtime_max_message_bytes,
)
from gateway.streaming.inbox import Inbox, message_bytes
from gateway.streaming.items import send_json, transcribe_item
from gateway.streaming.keycheck import KEY_REFUSED_CLOSE_CODE, key_refused
from gateway.streaming.vad import EnergyVad, Turn
from gateway.transcriptions.service import (
    refuse_disallowed_model,
    resolve_model,
)
from inference.protocol import TranscribeParams, TranscriptionResult

logger = logging.getLogger(__name__)

PROTOCOL = "realtime"  # one of metrics.STREAM_PROTOCOLS
SAMPLE_RATE = 24_000  # OpenAI's pcm16: 24 kHz, mono, little-endian
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
MIN_COMMIT_MS = 100
POLICY_VIOLATION = 1008

# OpenAI's server VAD defaults: a session's turn detection until it sends its own, and what
# fills in the fields a session.update leaves out. Read-only: a session keeps its own dict.
SERVER_VAD: Mapping[str, Any] = MappingProxyType(
    {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
    }
)


def event_id() -> str:
    return f"event_{uuid.uuid4().hex[:20]}"


def item_id() -> str:
    return f"item_{uuid.uuid4().hex[:20]}"


@dataclass
class SessionConfig:
    model: str
    language: str | None = None
    prompt: str = ""
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(SERVER_VAD))

    def public(self) -> dict[str, Any]:
        return {
            "object": "realtime.transcription_session",
            "input_audio_format": "pcm16",
            "input_audio_transcription": {
                "model": self.model,
                "language": self.language,
                "prompt": self.prompt,
            },
            "turn_detection": self.turn_detection,
        }


class EventError(Exception):
    """A client event refused with an ``error`` event; the session goes on."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


@dataclass(frozen=True)
class Committed:
    item_id: str
    pcm: bytes


class RealtimeSession:
    """One WebSocket's session: reads client events, cuts items, transcribes them in order."""

    def __init__(self, websocket: WebSocket, caller: AuthenticatedKey, created_type: str) -> None:
        self.websocket = websocket
        self.caller = caller
        self.created_type = created_type
        state = websocket.app.state
        self.settings: GatewaySettings = state.settings
        self.config = SessionConfig(model=self.settings.default_model)
        self.vad = self._new_vad()
        self.buffer = bytearray()
        self.speech_item: str | None = None
        self.previous_item: str | None = None
        # Two items waiting at most: a client sending faster than they are transcribed waits
        # (see the inbox's budget), rather than the gateway buffering its audio.
        self.items: asyncio.Queue[Committed | None] = asyncio.Queue(maxsize=2)
        # Read ahead up to one item's audio (base64 in JSON): a client that leaves while its
        # items wait is noticed.
        self.item_bytes = item_pcm_bytes(self.settings, SAMPLE_RATE)
        self.max_message_bytes = realtime_max_message_bytes(self.settings)
        self.inbox = Inbox(websocket, budget_bytes=self.item_bytes * 4 // 3)
        self.gone = False
        self.closing: tuple[int, str] | None = None

    # -- the session ---------------------------------------------------------------------

    async def run(self) -> None:
        await self.send(self.created_type, session=self.config.public())
        metrics.OPEN_STREAMS.labels(PROTOCOL).inc()
        try:
            async with anyio.create_task_group() as session:
                session.start_soon(self.inbox.run)
                session.start_soon(self._stop_when_client_leaves, session.cancel_scope)
                session.start_soon(self._end_when_key_refused, session.cancel_scope)
                async with anyio.create_task_group() as work:
                    work.start_soon(self._transcribe_items, work.cancel_scope)
                    with anyio.move_on_after(self.settings.realtime_max_session_seconds) as limit:
                        await self._read_events()
                    if limit.cancelled_caught:
                        await self.error(
                            "The session reached its maximum length.", "session_expired"
                        )
                        self.closing = (1000, "session_expired")
                    await self.items.put(None)
                session.cancel_scope.cancel()  # every item answered: stop reading the client
        finally:
            metrics.OPEN_STREAMS.labels(PROTOCOL).dec()
        if self.closing is not None and not self.gone:
            code, reason = self.closing
            await self.websocket.close(code, reason)

    async def _stop_when_client_leaves(self, session: anyio.CancelScope) -> None:
        """Nothing more can reach a client that left: the item in flight is cancelled (its hold
        given back, the node's work dropped) and the queued ones never start."""
        await self.inbox.left.wait()
        self.gone = True
        session.cancel()

    async def _end_when_key_refused(self, session: anyio.CancelScope) -> None:
        """A revoked or expired key ends the session: items delivered stay billed, the one in
        flight is cancelled (its hold given back) and the queued ones never start."""
        refusal = await key_refused(self.websocket.app.state, self.caller)
        self.closing = (KEY_REFUSED_CLOSE_CODE, refusal.code)
        await self.error(refusal.message, refusal.code)
        session.cancel()

    async def _read_events(self) -> None:
        while self.closing is None:
            with anyio.move_on_after(self.settings.realtime_idle_timeout_seconds) as idle:
                message = await self.inbox.receive()
            if idle.cancelled_caught:
                await self.error("No client event arrived within the idle timeout.", "idle_timeout")
                self.closing = (1000, "idle_timeout")
                return
            if message is None:
                self.gone = True
                return
            if message_bytes(message) > self.max_message_bytes:
                # Checked here too, whatever cap the server runs with: one message holds at
                # most one item's audio.
                await self.error(
                    f"An event holds at most {self.max_message_bytes} bytes (one item of "
                    f"{self.settings.realtime_max_item_seconds:g} s of audio); send audio in "
                    "smaller appends.",
                    "message_too_large",
                )
                self.closing = (MESSAGE_TOO_BIG, "message_too_large")
                return
            try:
                await self._handle(message.get("text"))
            except EventError as refused:
                await self.error(refused.message, refused.code, refused.param)

    async def _handle(self, message: str | None) -> None:
        if message is None:
            raise EventError("Events are JSON text frames, not binary ones.", "invalid_event")
        try:
            event = json.loads(message)
        except ValueError:
            raise EventError("The event is not JSON.", "invalid_json") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise EventError("An event is a JSON object with a 'type'.", "invalid_event")
        kind = event["type"]
        if kind in ("session.update", "transcription_session.update"):
            self._update(event.get("session"))
            updated = kind.replace(".update", ".updated")
            await self.send(updated, session=self.config.public())
        elif kind == "input_audio_buffer.append":
            await self._append(event.get("audio"))
        elif kind == "input_audio_buffer.commit":
            if len(self.buffer) < MIN_COMMIT_MS * BYTES_PER_MS:
                raise EventError(
                    f"The buffer holds less than {MIN_COMMIT_MS} ms of audio.",
                    "input_audio_buffer_commit_empty",
                )
            await self._commit(self.speech_item or item_id())
        elif kind == "input_audio_buffer.clear":
            self.buffer.clear()
            self.vad.reset()
            self.speech_item = None
            await self.send("input_audio_buffer.cleared")
        else:
            raise EventError(
                f"Unknown or unsupported event type '{kind}'.", "invalid_event", "type"
            )

    def _update(self, session: object) -> None:
        if not isinstance(session, dict):
            raise EventError("session.update needs a 'session' object.", "invalid_value", "session")
        audio_format = session.get("input_audio_format", "pcm16")
        if audio_format != "pcm16":
            raise EventError(
                "Only input_audio_format 'pcm16' (24 kHz, mono, 16-bit little-endian) is "
                "supported.",
                "invalid_value",
                "session.input_audio_format",
            )
        transcription = session.get("input_audio_transcription") or {}
        if not isinstance(transcription, dict):
            raise EventError("input_audio_transcription is an object.", "invalid_value")
        model = resolve_model(str(transcription.get("model") or ""), self.settings)
        try:
            refuse_disallowed_model(self.caller, model)
        except GatewayError as error:
            raise EventError(error.message, "permission_denied", "model") from None
        language = transcription.get("language") or None
        if language is not None and language not in LANGUAGE_CODES:
            raise EventError(
                f"'{language}' is not an ISO 639-1 language code the engines know.",
                "invalid_value",
                "session.input_audio_transcription.language",
            )
        turn = session.get("turn_detection", self.config.turn_detection)
        if turn is not None:
            if not isinstance(turn, dict) or turn.get("type", "server_vad") != "server_vad":
                raise EventError(
                    "turn_detection is null (commit by hand) or {'type': 'server_vad', ...}.",
                    "invalid_value",
                    "session.turn_detection",
                )
            turn = {**(self.config.turn_detection or SERVER_VAD), **turn}
        self.config = SessionConfig(
            model=model,
            language=language,
            prompt=str(transcription.get("prompt") or "")[:4096],
            turn_detection=turn,
        )
        self.vad = self._new_vad()

    async def _append(self, audio: object) -> None:
        try:
            pcm = base64.b64decode(str(audio), validate=True) if audio else b""
        except (binascii.Error, ValueError):
            raise EventError("'audio' is not base64.", "invalid_value", "audio") from None
        if len(pcm) % 2:
            raise EventError("pcm16 audio has an even number of bytes.", "invalid_value", "audio")
        # Taken in pieces that fit the item: no item holds more than the limit, however the
        # client cut its appends.
        while pcm:
            room = self.item_bytes - len(self.buffer)
            piece, pcm = pcm[:room], pcm[room:]
            await self._append_piece(piece)

    async def _append_piece(self, pcm: bytes) -> None:
        if self.config.turn_detection is None:
            self.buffer += pcm
        else:
            await self._detect_turns(pcm)
        if len(self.buffer) >= self.item_bytes:
            # The reservation increment: a long turn is committed in pieces.
            await self._commit(self.speech_item or item_id())
            self.speech_item = None
            if self.vad.speaking:
                # The turn goes on as a new item, announced like any other.
                self.speech_item = item_id()
                await self.send(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=self.vad.position_ms,
                    item_id=self.speech_item,
                )

    async def _detect_turns(self, pcm: bytes) -> None:
        """Turns found in ``pcm``: a turn's end commits the buffer with this piece of audio."""
        turn_detection = self.config.turn_detection or SERVER_VAD
        buffered = False
        for turn in self.vad.feed(pcm):
            if turn.kind is Turn.started:
                self.speech_item = self.speech_item or item_id()
                await self.send(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=turn.at_ms,
                    item_id=self.speech_item,
                )
                continue
            if not buffered:
                self.buffer += pcm
                buffered = True
            stopped = self.speech_item or item_id()
            await self.send(
                "input_audio_buffer.speech_stopped", audio_end_ms=turn.at_ms, item_id=stopped
            )
            await self._commit(stopped)
            self.speech_item = None
        if not buffered:
            self.buffer += pcm
        if not self.vad.speaking and self.speech_item is None:
            # Between turns only the prefix padding is kept: silence is neither sent nor held.
            keep = int(turn_detection.get("prefix_padding_ms", 300)) * BYTES_PER_MS
            del self.buffer[: max(0, len(self.buffer) - keep)]

    async def _commit(self, committed_item: str) -> None:
        pcm, self.buffer = bytes(self.buffer), bytearray()
        await self.send(
            "input_audio_buffer.committed",
            previous_item_id=self.previous_item,
            item_id=committed_item,
        )
        self.previous_item = committed_item
        await self.items.put(Committed(committed_item, pcm))

    def _new_vad(self) -> EnergyVad:
        turn = self.config.turn_detection or SERVER_VAD
        return EnergyVad(
            SAMPLE_RATE,
            threshold=float(turn.get("threshold", 0.5)),
            silence_duration_ms=int(turn.get("silence_duration_ms", 500)),
            prefix_padding_ms=int(turn.get("prefix_padding_ms", 300)),
        )

    # -- items ---------------------------------------------------------------------------

    async def _transcribe_items(self, session_scope: anyio.CancelScope) -> None:
        while (item := await self.items.get()) is not None:
            if self.gone:
                continue  # nothing is sent to a client that left, so nothing is billed
            await self._transcribe(item)
            if self.closing is not None:
                session_scope.cancel()
                return

    async def _transcribe(self, item: Committed) -> None:
        params = TranscribeParams(
            model=self.config.model,
            language=self.config.language or "auto",
            hotwords=self.config.prompt or None,
        )

        async def deliver(result: TranscriptionResult) -> bool:
            return await self.send(
                "conversation.item.input_audio_transcription.delta",
                item_id=item.item_id,
                content_index=0,
                delta=result.text,
            )

        try:
            outcome = await transcribe_item(
                self.websocket.app.state,
                self.caller,
                item.pcm,
                SAMPLE_RATE,
                params,
                protocol=PROTOCOL,
                deliver=deliver,
            )
        except QuotaExceeded as error:
            await self.error(error.message, "insufficient_quota", event_type="insufficient_quota")
            self.closing = (POLICY_VIOLATION, "insufficient_quota")
            return
        except GatewayError as error:
            await self._failed(item, error)
            return
        if outcome.charge is not None:
            await self.send(
                "conversation.item.input_audio_transcription.completed",
                item_id=item.item_id,
                content_index=0,
                transcript=outcome.result.text,
                usage=usage_body(outcome.charge),
            )
        elif outcome.failure is not None:
            await self._failed(item, outcome.failure)

    async def _failed(self, item: Committed, error: GatewayError) -> None:
        """The item is not transcribed, or its transcript could not be billed (then it is
        free); the session goes on."""
        await self.send(
            "conversation.item.input_audio_transcription.failed",
            item_id=item.item_id,
            content_index=0,
            error={"type": error.error_type, "code": error.code, "message": error.message},
        )

    # -- sending -------------------------------------------------------------------------

    async def send(self, kind: str, **fields: Any) -> bool:
        """Send an event; False when the client has gone (then nothing more is sent)."""
        if not self.gone:
            message = {"event_id": event_id(), "type": kind, **fields}
            self.gone = not await send_json(self.websocket, message)
        return not self.gone

    async def error(
        self, message: str, code: str, param: str | None = None, *, event_type: str | None = None
    ) -> None:
        await self.send(
            "error",
            error={
                "type": event_type or "invalid_request_error",
                "code": code,
                "message": message,
                "param": param,
            },
        )

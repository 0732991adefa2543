"""FunASR's WebSocket protocol at ``/funasr``, so FunASR's own clients work through the gateway
with an API key.

```
client                                       gateway
{"mode", "wav_name", "is_speaking": true,     ──▶ (config; audio_fs, hotwords, itn)
 "chunk_size", "hotwords", "itn", "audio_fs"}
binary PCM16 frames ─────────────────────────▶ server VAD turns (2pass, online) or one buffer
                                                (offline) ──▶ items, each billed on its own row
      ◀── {"mode": "2pass-offline" | "online", "wav_name", "text", "is_final": false, "timestamp"}
{"is_speaking": false} ──────────────────────▶ the rest committed, then
      ◀── {"mode", "wav_name", "text" (offline: the whole text; else ""), "is_final": true}
```

With ``GATEWAY_ONLINE_MODEL`` set (an online model such as paraformer-zh-streaming served by
the nodes) and 16 kHz audio, ``online`` and ``2pass`` send partial text while a turn is spoken
(``online`` / ``2pass-online`` results, ``live.py``), and ``2pass`` then the turn decoded again
by the offline model (``2pass-offline``). Without one, each turn is answered once it ends.

Billing: one ledger row per item (a turn, or at most ``GATEWAY_REALTIME_MAX_ITEM_SECONDS`` of
audio), for the text the client gets as the item's final (``2pass``: the offline text;
``online``: its partials). A client gone before an item's final is billed for the partial text
it was sent (none: nothing). An item whose hold does not fit ends the session with an
``insufficient_quota`` error and close code 1008.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from billing.keys.schemas import AuthenticatedKey
from gateway.config import GatewaySettings
from gateway.errors import GatewayError, QuotaExceeded
from gateway.streaming.items import send_json, transcribe_item
from gateway.streaming.live import LIVE_SAMPLE_RATE, LiveTurn, TurnOutcome
from gateway.streaming.vad import EnergyVad, Turn
from inference.protocol import Segment, TranscribeParams

logger = logging.getLogger(__name__)

PROTOCOL = "funasr"  # one of metrics.STREAM_PROTOCOLS
MODES = ("offline", "online", "2pass")
POLICY_VIOLATION = 1008


class ProtocolError(Exception):
    """A first message the session cannot start from."""


@dataclass(frozen=True)
class FunasrConfig:
    mode: str
    wav_name: str
    audio_fs: int
    hotwords: str
    itn: bool

    @classmethod
    def parse(cls, message: str) -> FunasrConfig:
        try:
            fields = json.loads(message)
        except ValueError:
            raise ProtocolError("The first message is the JSON configuration.") from None
        if not isinstance(fields, dict):
            raise ProtocolError("The first message is a JSON object.")
        mode = str(fields.get("mode", "2pass"))
        if mode not in MODES:
            raise ProtocolError(f"mode is one of {', '.join(MODES)}.")
        audio_fs = fields.get("audio_fs", 16_000)
        if not isinstance(audio_fs, int) or not 8_000 <= audio_fs <= 48_000:
            raise ProtocolError("audio_fs is a sample rate from 8000 to 48000.")
        if str(fields.get("wav_format", "pcm")) != "pcm":
            raise ProtocolError("Only wav_format 'pcm' (16-bit mono PCM frames) is supported.")
        return cls(
            mode=mode,
            wav_name=str(fields.get("wav_name", "demo"))[:256],
            audio_fs=audio_fs,
            hotwords=hotword_text(fields.get("hotwords")),
            itn=bool(fields.get("itn", True)),
        )


def hotword_text(hotwords: object) -> str:
    """FunASR clients send hotwords as space-separated text or as a JSON object string of
    word → weight; the node takes them as one prompt."""
    if not hotwords:
        return ""
    text = str(hotwords)
    try:
        weighted = json.loads(text)
    except ValueError:
        return text[:4096]
    if isinstance(weighted, dict):
        return " ".join(str(word) for word in weighted)[:4096]
    return text[:4096]


@dataclass(frozen=True)
class Piece:
    pcm: bytes
    offset_ms: int  # where the piece starts in the session's audio
    turn: LiveTurn | None = None  # decoded live as it was spoken


class FunasrSession:
    def __init__(self, websocket: WebSocket, caller: AuthenticatedKey) -> None:
        self.websocket = websocket
        self.caller = caller
        self.settings: GatewaySettings = websocket.app.state.settings
        self.items: asyncio.Queue[Piece | None] = asyncio.Queue(maxsize=2)
        self.texts: list[str] = []
        self.gone = False
        self.closing: tuple[int, str] | None = None
        self.buffer = bytearray()
        self.buffer_offset_ms = 0
        self.received_ms = 0
        self.turn: LiveTurn | None = None  # the turn being decoded live
        self.refusal: BaseException | None = None  # why a live turn ended the session
        self.turns: set[LiveTurn] = set()  # live turns not yet settled

    async def run(self) -> None:
        try:
            with anyio.fail_after(self.settings.realtime_idle_timeout_seconds):
                first = await self.websocket.receive_text()
            self.config = FunasrConfig.parse(first)
        except (ProtocolError, TimeoutError, KeyError) as error:
            await self.send_error("invalid_request", str(error) or "no configuration message")
            await self.websocket.close(POLICY_VIOLATION, "invalid_request")
            return
        except WebSocketDisconnect:
            return
        self.vad = EnergyVad(
            self.config.audio_fs, threshold=0.5, silence_duration_ms=800, prefix_padding_ms=300
        )
        self.live = (
            bool(self.settings.online_model)
            and self.config.mode != "offline"
            and self.config.audio_fs == LIVE_SAMPLE_RATE
        )
        try:
            async with anyio.create_task_group() as group:
                self.scope = group.cancel_scope
                group.start_soon(self._transcribe_items, group.cancel_scope)
                with anyio.move_on_after(self.settings.realtime_max_session_seconds):
                    await self._read()
                if self.gone:
                    group.cancel_scope.cancel()
                elif self.closing is None and (
                    self.config.mode == "offline" or self.vad.speaking or self.turn
                ):
                    await self._commit()  # between turns only padding is left: nothing to send
                await self.items.put(None)
        finally:
            with anyio.CancelScope(shield=True):
                await self._settle_abandoned_turns()
        if not self.gone:
            await self._final()

    async def _read(self) -> None:
        while self.closing is None:
            with anyio.move_on_after(self.settings.realtime_idle_timeout_seconds) as idle:
                try:
                    message = await self.websocket.receive()
                except WebSocketDisconnect:
                    self.gone = True
                    return
            if idle.cancelled_caught:
                return  # as if the client had said is_speaking: false
            if message["type"] == "websocket.disconnect":
                self.gone = True
                return
            if message.get("bytes") is not None:
                await self._audio(message["bytes"])
            elif message.get("text") is not None:
                try:
                    fields = json.loads(message["text"])
                except ValueError:
                    continue
                if isinstance(fields, dict) and fields.get("is_speaking") is False:
                    return

    async def _audio(self, pcm: bytes) -> None:
        bytes_per_ms = self.config.audio_fs * 2 // 1000
        self.received_ms += len(pcm) // bytes_per_ms
        if self.config.mode == "offline":
            self.buffer += pcm
        else:
            turns = self.vad.feed(pcm)
            self.buffer += pcm
            if self.live:
                self._decode_live(pcm)
            if any(turn.kind is Turn.stopped for turn in turns):
                await self._commit()
            elif not self.vad.speaking:
                keep = 300 * bytes_per_ms
                dropped = max(0, len(self.buffer) - keep)
                del self.buffer[:dropped]
                self.buffer_offset_ms += dropped // bytes_per_ms
        if len(self.buffer) >= self.settings.realtime_max_item_seconds * 1000 * bytes_per_ms:
            await self._commit()

    def _decode_live(self, pcm: bytes) -> None:
        """Audio of a turn goes to the online model as it comes; a turn opens when speech
        starts, with the padding before it."""
        if self.turn is not None:
            self.turn.feed(pcm)
        elif self.vad.speaking:
            self.turn = LiveTurn(
                self.websocket.app.state,
                self.caller,
                online=TranscribeParams(model=self.settings.online_model, itn=self.config.itn),
                offline=self._params() if self.config.mode == "2pass" else None,
                max_item_ms=round(self.settings.realtime_max_item_seconds * 1000),
                on_delta=self._partial,
                protocol=PROTOCOL,
            )
            self.turns.add(self.turn)
            self.turn.task.add_done_callback(self._turn_done)
            self.turn.feed(bytes(self.buffer))

    def _turn_done(self, task: asyncio.Task[TurnOutcome]) -> None:
        """A live turn whose hold did not fit ends the session at once, while the client may
        still be speaking. (One that no node took ends without an exception: it is answered
        whole when it ends, and the next turn tries a live stream again.)"""
        if task.cancelled() or task.exception() is None:
            return
        if not isinstance(task.exception(), QuotaExceeded):
            self.live = False
        elif self.closing is None and not self.gone:
            self.refusal = task.exception()
            self.closing = (POLICY_VIOLATION, "insufficient_quota")
            self.scope.cancel()

    async def _partial(self, text: str) -> bool:
        mode = "2pass-online" if self.config.mode == "2pass" else "online"
        await self.send(mode=mode, text=text, is_final=False)
        return not self.gone

    async def _commit(self) -> None:
        bytes_per_ms = self.config.audio_fs * 2 // 1000
        turn, self.turn = self.turn, None
        if turn is not None:
            turn.end()
        elif len(self.buffer) < 100 * bytes_per_ms:
            return
        piece = Piece(bytes(self.buffer), self.buffer_offset_ms, turn)
        self.buffer_offset_ms += len(self.buffer) // bytes_per_ms
        self.buffer = bytearray()
        await self.items.put(piece)

    async def _settle_abandoned_turns(self) -> None:
        """Live turns whose final will not be sent (the client left, the session was closed)
        are billed for the partials the client was sent."""
        for turn in self.turns:
            turn.cancel()
        await asyncio.gather(*(turn.task for turn in self.turns), return_exceptions=True)

    async def _transcribe_items(self, session_scope: anyio.CancelScope) -> None:
        while (piece := await self.items.get()) is not None:
            if self.gone or self.closing is not None:
                if piece.turn is not None:
                    piece.turn.cancel()  # its final will not be sent: the partials are billed
                continue
            await self._transcribe(piece)
            if self.closing is not None:
                session_scope.cancel()

    def _params(self) -> TranscribeParams:
        return TranscribeParams(
            model=self.settings.default_model,
            hotwords=self.config.hotwords or None,
            itn=self.config.itn,
        )

    async def _finish_turn(self, piece: Piece, turn: LiveTurn) -> None:
        try:
            outcome = await turn.outcome()
        except GatewayError as error:
            await self._refused(error)
            return
        finally:
            self.turns.discard(turn)
        if outcome.error is not None and outcome.charge is None:
            # No live text reached the client (no node took the stream, or it failed at once):
            # the turn is transcribed as a whole instead.
            logger.warning("live turn failed, answered whole: %s", outcome.error.message)
            await self._transcribe(Piece(piece.pcm, piece.offset_ms))
            return
        if outcome.error is not None:
            await self.send_error(outcome.error.code, outcome.error.message)
        self.texts.append(outcome.text)
        if outcome.final is not None and outcome.final.text:
            await self.send(
                mode="2pass-offline",
                text=outcome.final.text,
                is_final=False,
                timestamp=timestamps(outcome.final.segments, piece.offset_ms),
            )

    async def _transcribe(self, piece: Piece) -> None:
        if piece.turn is not None:
            await self._finish_turn(piece, piece.turn)
            return
        params = self._params()

        async def client_gone() -> bool:
            return self.gone

        try:
            billed = await transcribe_item(
                self.websocket.app.state,
                self.caller,
                piece.pcm,
                self.config.audio_fs,
                params,
                protocol=PROTOCOL,
                client_gone=client_gone,
            )
        except GatewayError as error:
            await self._refused(error)
            return
        text = billed.result.text
        self.texts.append(text)
        if self.config.mode != "offline" and text:
            mode = "2pass-offline" if self.config.mode == "2pass" else "online"
            await self.send(
                mode=mode,
                text=text,
                is_final=False,
                timestamp=timestamps(billed.result.segments, piece.offset_ms),
            )

    async def _refused(self, error: GatewayError) -> None:
        """An item not transcribed: the client is told why; a hold that does not fit ends the
        session."""
        await self.send_error(error.code, error.message)
        if isinstance(error, QuotaExceeded):
            self.closing = (POLICY_VIOLATION, "insufficient_quota")

    async def _final(self) -> None:
        if isinstance(self.refusal, GatewayError):
            await self.send_error(self.refusal.code, self.refusal.message)
        if self.closing is not None:
            code, reason = self.closing
            await self.websocket.close(code, reason)
            return
        text = " ".join(text for text in self.texts if text)
        mode = "2pass-offline" if self.config.mode == "2pass" else self.config.mode
        await self.send(
            mode=mode, text=text if self.config.mode == "offline" else "", is_final=True
        )
        await self.websocket.close(1000)

    async def send(self, **fields: Any) -> None:
        if not self.gone:
            message = {"wav_name": self.config.wav_name, **fields}
            self.gone = not await send_json(self.websocket, message)

    async def send_error(self, code: str, message: str) -> None:
        if not self.gone:
            error = {"error": {"code": code, "message": message}}
            self.gone = not await send_json(self.websocket, error)


def timestamps(segments: list[Segment], offset_ms: int) -> str:
    """FunASR's ``timestamp``: ``[[start_ms, end_ms], ...]`` as text, here one pair per
    segment, in the session's audio time."""
    pairs = [
        [offset_ms + round(segment.start * 1000), offset_ms + round(segment.end * 1000)]
        for segment in segments
    ]
    return json.dumps(pairs)

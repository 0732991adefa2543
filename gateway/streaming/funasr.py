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
audio), for the text the client was sent as the item's final (``2pass``: the offline text;
``online``: its partials), through the streamed money sequence (``gateway.billed.stream``):
text is billed only once the client was sent it. In ``offline`` mode each chunk is held and
transcribed as it comes, and billed when the final message carrying its text was sent; a
session that ends without one (the client left, a later chunk's hold did not fit) bills the
chunks whose text it sent and gives the rest back. A client gone before an item's final is
billed for the partial text it was sent (none: nothing); the session reads its client while
items wait (``inbox.py``), so that is noticed at once. An item whose hold does not fit ends the
session with an ``insufficient_quota`` error and close code 1008; one the ledger cannot hold or
bill gets an error message (``ledger_unavailable``) and the session goes on. A message larger
than one item's audio ends it with ``message_too_large`` and close code 1009 (``frames.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.datastructures import State
from starlette.websockets import WebSocket, WebSocketDisconnect

from billing.keys.schemas import AuthenticatedKey
from gateway.billed.stream import DeliveryMeter
from gateway.config import GatewaySettings
from gateway.errors import AuthError, GatewayError, QuotaExceeded
from gateway.streaming.frames import MESSAGE_TOO_BIG, funasr_max_message_bytes
from gateway.streaming.inbox import Inbox, message_bytes
from gateway.streaming.items import (
    open_item,
    pcm_ms,
    send_json,
    streamed_audio,
    transcribe_item,
    transcribe_pcm,
)
from gateway.streaming.keycheck import KEY_REFUSED_CLOSE_CODE, key_refused
from gateway.streaming.live import LIVE_SAMPLE_RATE, LiveTurn, TurnOutcome
from gateway.streaming.vad import EnergyVad, Turn
from inference.protocol import Segment, TranscribeParams, TranscriptionResult

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


@dataclass(frozen=True)
class OfflineChunk:
    """A transcribed chunk of an ``offline`` session, held until the final message carries its
    text (then billed) or the session ends without one (then given back)."""

    meter: DeliveryMeter
    result: TranscriptionResult


class FunasrSession:
    def __init__(self, websocket: WebSocket, caller: AuthenticatedKey) -> None:
        self.websocket = websocket
        self.caller = caller
        self.key_refusal: AuthError | None = None
        self.state: State = websocket.app.state
        self.settings: GatewaySettings = self.state.settings
        self.items: asyncio.Queue[Piece | None] = asyncio.Queue(maxsize=2)
        self.offline_chunks: list[OfflineChunk] = []
        self.gone = False
        self.closing: tuple[int, str] | None = None
        self.buffer = bytearray()
        self.buffer_offset_ms = 0
        self.received_ms = 0
        self.turn: LiveTurn | None = None  # the turn being decoded live
        self.refusal: BaseException | None = None  # why a live turn ended the session
        self.turns: set[LiveTurn] = set()  # live turns not yet settled
        # Set when the items loop reaches a live turn: its final waits for it, so finals go out
        # in the order the turns were spoken.
        self.turn_reached: dict[LiveTurn, asyncio.Event] = {}

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
        # Read ahead up to one item's audio: a client that leaves while items wait is noticed.
        self.item_bytes = int(self.settings.realtime_max_item_seconds * 1000 * self.bytes_per_ms)
        self.max_message_bytes = funasr_max_message_bytes(self.settings, self.config.audio_fs)
        self.inbox = Inbox(self.websocket, budget_bytes=self.item_bytes)
        try:
            async with anyio.create_task_group() as session:
                self.scope = session.cancel_scope
                session.start_soon(self.inbox.run)
                session.start_soon(self._stop_when_client_leaves, session.cancel_scope)
                session.start_soon(self._end_when_key_refused, session.cancel_scope)
                async with anyio.create_task_group() as work:
                    work.start_soon(self._transcribe_items, work.cancel_scope)
                    with anyio.move_on_after(self.settings.realtime_max_session_seconds):
                        await self._read()
                    if self.closing is None and (
                        self.config.mode == "offline" or self.vad.speaking or self.turn
                    ):
                        await self._commit()  # between turns only padding is left
                    await self.items.put(None)
                session.cancel_scope.cancel()  # every item answered: stop reading the client
            if not self.gone:
                await self._final()
        finally:
            with anyio.CancelScope(shield=True):
                await self._settle_undelivered()

    @property
    def bytes_per_ms(self) -> int:
        return self.config.audio_fs * 2 // 1000

    async def _stop_when_client_leaves(self, session: anyio.CancelScope) -> None:
        """Nothing more can reach a client that left: the work in flight is cancelled and the
        text it was not sent is not billed."""
        await self.inbox.left.wait()
        self.gone = True
        session.cancel()

    async def _end_when_key_refused(self, session: anyio.CancelScope) -> None:
        """A revoked or expired key ends the session: text delivered stays billed, the work in
        flight is cancelled and undelivered text given back (``_settle_undelivered``)."""
        self.key_refusal = await key_refused(self.state, self.caller)
        self.closing = (KEY_REFUSED_CLOSE_CODE, self.key_refusal.code)
        session.cancel()

    async def _read(self) -> None:
        while self.closing is None:
            with anyio.move_on_after(self.settings.realtime_idle_timeout_seconds) as idle:
                message = await self.inbox.receive()
            if idle.cancelled_caught:
                return  # as if the client had said is_speaking: false
            if message is None:
                self.gone = True
                return
            if message_bytes(message) > self.max_message_bytes:
                # Checked here too, whatever cap the server runs with.
                await self.send_error(
                    "message_too_large",
                    f"A message holds at most {self.max_message_bytes} bytes (one item of "
                    f"{self.settings.realtime_max_item_seconds:g} s of audio at "
                    f"{self.config.audio_fs} Hz); send smaller frames.",
                )
                self.closing = (MESSAGE_TOO_BIG, "message_too_large")
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
        # Taken in pieces that fit the item: no item holds more than the limit, however the
        # client cut its frames.
        while pcm:
            room = self.item_bytes - len(self.buffer)
            piece, pcm = (pcm[:room], pcm[room:]) if room > 0 else (pcm, b"")
            await self._audio_piece(piece)

    async def _audio_piece(self, pcm: bytes) -> None:
        bytes_per_ms = self.bytes_per_ms
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
        if len(self.buffer) >= self.item_bytes:
            await self._commit()

    def _decode_live(self, pcm: bytes) -> None:
        """Audio of a turn goes to the online model as it comes; a turn opens when speech
        starts, with the padding before it."""
        if self.turn is not None:
            self.turn.feed(pcm)
        elif self.vad.speaking:
            reached = asyncio.Event()
            offset_ms = self.buffer_offset_ms  # the turn's piece starts here (see _commit)

            async def on_final(result: TranscriptionResult) -> bool:
                await reached.wait()
                if not result.text:
                    return not self.gone  # nothing to send; an empty final costs nothing
                return await self.send(
                    mode="2pass-offline",
                    text=result.text,
                    is_final=False,
                    timestamp=timestamps(result.segments, offset_ms),
                )

            self.turn = LiveTurn(
                self.state,
                self.caller,
                online=TranscribeParams(model=self.settings.online_model, itn=self.config.itn),
                offline=self._params() if self.config.mode == "2pass" else None,
                max_item_ms=round(self.settings.realtime_max_item_seconds * 1000),
                on_delta=self._partial,
                on_final=on_final,
                protocol=PROTOCOL,
            )
            self.turns.add(self.turn)
            self.turn_reached[self.turn] = reached
            self.turn.task.add_done_callback(self._turn_done)
            self.turn.feed(bytes(self.buffer))

    def _turn_done(self, task: asyncio.Task[TurnOutcome]) -> None:
        """A live turn whose hold did not fit ends the session at once, while the client may
        still be speaking. (One that no node took ends without an exception: it is answered
        whole when it ends, and the next turn tries a live stream again.)"""
        if task.cancelled() or task.exception() is None:
            return
        if not isinstance(task.exception(), GatewayError):
            self.live = False  # unexpected: later turns are answered whole
        elif not isinstance(task.exception(), QuotaExceeded):
            return  # the ledger could not hold it: its piece reports the error
        elif self.closing is None and not self.gone:
            self.refusal = task.exception()
            self.closing = (POLICY_VIOLATION, "insufficient_quota")
            self.scope.cancel()

    async def _partial(self, text: str) -> bool:
        mode = "2pass-online" if self.config.mode == "2pass" else "online"
        return await self.send(mode=mode, text=text, is_final=False)

    async def _commit(self) -> None:
        bytes_per_ms = self.bytes_per_ms
        turn, self.turn = self.turn, None
        if turn is not None:
            turn.end()
        elif len(self.buffer) < 100 * bytes_per_ms:
            return
        piece = Piece(bytes(self.buffer), self.buffer_offset_ms, turn)
        self.buffer_offset_ms += len(self.buffer) // bytes_per_ms
        self.buffer = bytearray()
        await self.items.put(piece)

    async def _settle_undelivered(self) -> None:
        """What the client will not be sent (it left, the session was closed) is billed for
        what it was sent before: a live turn's partials; an offline chunk's nothing."""
        for turn in self.turns:
            turn.cancel()
        await asyncio.gather(*(turn.task for turn in self.turns), return_exceptions=True)
        for chunk in self.offline_chunks:
            if not chunk.meter.settled:
                await chunk.meter.settle()
                streamed_audio(
                    PROTOCOL, "client_gone" if self.gone else "failed", chunk.meter.audio_ms
                )

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
        self.turn_reached.pop(turn, asyncio.Event()).set()
        try:
            outcome = await turn.outcome()
        except GatewayError as error:
            await self._refused(error)
            return
        finally:
            self.turns.discard(turn)
        if outcome.error is not None and not outcome.text:
            # No live text reached the client (no node took the stream, or it failed at once):
            # the turn is transcribed as a whole instead.
            logger.warning("live turn failed, answered whole: %s", outcome.error.message)
            await self._transcribe(Piece(piece.pcm, piece.offset_ms))
            return
        if outcome.error is not None:
            await self.send_error(outcome.error.code, outcome.error.message)

    async def _transcribe(self, piece: Piece) -> None:
        if piece.turn is not None:
            await self._finish_turn(piece, piece.turn)
            return
        if self.config.mode == "offline":
            await self._transcribe_offline_chunk(piece)
            return
        mode = "2pass-offline" if self.config.mode == "2pass" else "online"

        async def deliver(result: TranscriptionResult) -> bool:
            if not result.text:
                return not self.gone  # nothing to send; an empty transcript costs nothing
            return await self.send(
                mode=mode,
                text=result.text,
                is_final=False,
                timestamp=timestamps(result.segments, piece.offset_ms),
            )

        try:
            outcome = await transcribe_item(
                self.state,
                self.caller,
                piece.pcm,
                self.config.audio_fs,
                self._params(),
                protocol=PROTOCOL,
                deliver=deliver,
            )
        except GatewayError as error:
            await self._refused(error)
            return
        if outcome.failure is not None:
            await self.send_error(outcome.failure.code, outcome.failure.message)

    async def _transcribe_offline_chunk(self, piece: Piece) -> None:
        """An ``offline`` chunk: held and transcribed now, its text sent (and billed) with the
        final message."""
        params = self._params()
        audio_ms = pcm_ms(piece.pcm, self.config.audio_fs)
        try:
            meter = await open_item(self.state, self.caller, str(params.model), audio_ms)
        except GatewayError as error:
            await self._refused(error)
            return
        try:
            result = await transcribe_pcm(self.state, piece.pcm, self.config.audio_fs, params)
        except BaseException as error:
            await meter.settle()  # nothing delivered: the hold given back
            if not isinstance(error, GatewayError):
                raise
            await self._refused(error)
            return
        self.offline_chunks.append(OfflineChunk(meter, result))

    async def _refused(self, error: GatewayError) -> None:
        """An item not transcribed: the client is told why; a hold that does not fit ends the
        session."""
        await self.send_error(error.code, error.message)
        if isinstance(error, QuotaExceeded):
            self.closing = (POLICY_VIOLATION, "insufficient_quota")

    async def _final(self) -> None:
        """The last message: in ``offline`` mode the text of every chunk transcribed (each
        billed once it was sent), then what ended the session early, if anything."""
        if self.key_refusal is not None:
            # Nothing more is delivered on a refused key; chunks not sent are given back.
            await self.send_error(self.key_refusal.code, self.key_refusal.message)
        elif self.config.mode == "offline" and (self.offline_chunks or self.closing is None):
            await self._deliver_offline_text()
        if isinstance(self.refusal, GatewayError):
            await self.send_error(self.refusal.code, self.refusal.message)
        if self.closing is not None:
            code, reason = self.closing
            await self.websocket.close(code, reason)
            return
        if self.config.mode != "offline":
            mode = "2pass-offline" if self.config.mode == "2pass" else self.config.mode
            await self.send(mode=mode, text="", is_final=True)
        await self.websocket.close(1000)

    async def _deliver_offline_text(self) -> None:
        text = " ".join(chunk.result.text for chunk in self.offline_chunks if chunk.result.text)
        delivered = await self.send(mode="offline", text=text, is_final=True)
        for chunk in self.offline_chunks:
            if delivered:
                chunk.meter.sent_final(chunk.result)
            charge = await chunk.meter.settle()
            outcome = "completed" if charge is not None else "client_gone"
            streamed_audio(PROTOCOL, outcome, chunk.meter.audio_ms)
            if chunk.meter.failure is not None and delivered:
                failure = chunk.meter.failure
                await self.send_error(failure.code, failure.message)

    async def send(self, **fields: Any) -> bool:
        """Send a message; False when the client has gone (then nothing more is sent)."""
        if not self.gone:
            message = {"wav_name": self.config.wav_name, **fields}
            self.gone = not await send_json(self.websocket, message)
        return not self.gone

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

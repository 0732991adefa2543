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

Without a streaming engine on the nodes, ``online`` and ``2pass`` answer each turn of speech
once it ends (``2pass-offline`` results), not partial ``2pass-online`` text while it is spoken.
Billing is the realtime WebSocket's: one ledger row per item (a turn, or at most
``GATEWAY_REALTIME_MAX_ITEM_SECONDS`` of audio), a client gone before an item's text is sent is
not billed for it, and an item whose hold does not fit ends the session with an
``insufficient_quota`` error and close code 1008.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from billing.keys.schemas import AuthenticatedKey
from gateway.config import GatewaySettings
from gateway.errors import GatewayError, QuotaExceeded
from gateway.streaming.items import send_json, transcribe_item
from gateway.streaming.vad import EnergyVad, Turn
from inference.protocol import Segment, TranscribeParams

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
        async with anyio.create_task_group() as group:
            group.start_soon(self._transcribe_items, group.cancel_scope)
            with anyio.move_on_after(self.settings.realtime_max_session_seconds):
                await self._read()
            if self.gone:
                group.cancel_scope.cancel()
            elif self.closing is None and (self.config.mode == "offline" or self.vad.speaking):
                await self._commit()  # between turns only padding is left: nothing to send
            await self.items.put(None)
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
            if any(turn.kind is Turn.stopped for turn in turns):
                await self._commit()
            elif not self.vad.speaking:
                keep = 300 * bytes_per_ms
                dropped = max(0, len(self.buffer) - keep)
                del self.buffer[:dropped]
                self.buffer_offset_ms += dropped // bytes_per_ms
        if len(self.buffer) >= self.settings.realtime_max_item_seconds * 1000 * bytes_per_ms:
            await self._commit()

    async def _commit(self) -> None:
        bytes_per_ms = self.config.audio_fs * 2 // 1000
        if len(self.buffer) < 100 * bytes_per_ms:
            return
        piece = Piece(bytes(self.buffer), self.buffer_offset_ms)
        self.buffer_offset_ms += len(self.buffer) // bytes_per_ms
        self.buffer = bytearray()
        await self.items.put(piece)

    async def _transcribe_items(self, session_scope: anyio.CancelScope) -> None:
        while (piece := await self.items.get()) is not None:
            if self.gone or self.closing is not None:
                continue
            await self._transcribe(piece)
            if self.closing is not None:
                session_scope.cancel()

    async def _transcribe(self, piece: Piece) -> None:
        params = TranscribeParams(
            model=self.settings.default_model,
            hotwords=self.config.hotwords or None,
            itn=self.config.itn,
        )

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
        except QuotaExceeded as error:
            await self.send_error("insufficient_quota", error.message)
            self.closing = (POLICY_VIOLATION, "insufficient_quota")
            return
        except GatewayError as error:
            await self.send_error(error.code, error.message)
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

    async def _final(self) -> None:
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

"""``stream=true`` on ``POST /v1/audio/transcriptions``: Server-Sent Events as OpenAI sends
them, billed for exactly what was sent (``gateway.billed.stream``).

```
hold (worst case; a cached answer is charged instead) before the 200 ──▶ 402 as JSON
200 text/event-stream
  ├── node delta ──▶ data: {"type": "transcript.text.delta", "delta"} ─┐ (sent: counted)
  │      ... one per stretch of speech, as the node decodes it  ◀─────┘
  ├── node result ──▶ settle the text sent ──▶ data: {"type": "transcript.text.done",
  │                                                    "text", "usage" (the ledger row's)}
  ├── client gone ──▶ settle the text sent so far (nothing sent: release) ── no more events
  └── node failed ──▶ settle the text sent so far ──▶ data: {"error": {...}} (the SDK raises it)
```

A delta counts as sent once the server has taken it for the connection; the ledger row is
written before ``transcript.text.done`` goes out, so its ``usage`` is the row's. A cache hit is
charged before its first byte and sends its transcript as one delta. Idle time costs nothing:
the charge is the tokens of the text sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from billing.usage.schemas import UsageCharge
from gateway import metrics
from gateway.billed.responses import usage_body
from gateway.billed.stream import DeliveryMeter
from gateway.errors import GatewayError, error_response
from gateway.nodes.streaming import StreamedTranscript, TranscriptDelta
from inference.protocol import TranscriptionResult

logger = logging.getLogger(__name__)

PROTOCOL = "sse"  # one of metrics.STREAM_PROTOCOLS
MEDIA_TYPE = "text/event-stream"


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


class MeteredTranscriptStream(Response):
    """An ASGI response streaming one billed transcription (see the module docstring). It owns
    ``meter``, opened before the 200, and settles it however the stream ends."""

    media_type = MEDIA_TYPE

    def __init__(
        self,
        *,
        meter: DeliveryMeter,
        cached: TranscriptionResult | None,
        open_stream: Callable[[], AbstractAsyncContextManager[StreamedTranscript]],
        remember: Callable[[TranscriptionResult], Awaitable[None]],
        release_slot: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(status_code=200, media_type=MEDIA_TYPE)
        self.release_slot = release_slot
        self.meter = meter
        self.cached = cached
        self.open_stream = open_stream
        self.remember = remember
        self.result: TranscriptionResult | None = None
        self.failure: GatewayError | None = None
        self.client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.OPEN_STREAMS.labels(PROTOCOL).inc()
        outcome = "failed"
        try:
            charge: UsageCharge | None = None
            try:
                async with AsyncExitStack() as stack:
                    try:
                        pieces = await stack.enter_async_context(self._source())
                    except GatewayError as error:
                        # No node began: an ordinary error response, and nothing billed.
                        await self.meter.settle()
                        await error_response(error)(scope, receive, send)
                        return
                    await send(self._start())
                    async with anyio.create_task_group() as group:
                        group.start_soon(self._watch_disconnect, receive, group.cancel_scope)
                        await self._relay(send, pieces)
                        group.cancel_scope.cancel()
            finally:
                # Also when the server cancels the response: what was sent is billed.
                charge = await self.meter.settle()
                outcome = self._outcome()
            await self._remember(charge)
            if not self.client_gone:
                await self._finish(send, charge)
        finally:
            metrics.OPEN_STREAMS.labels(PROTOCOL).dec()
            metrics.STREAMED_AUDIO_SECONDS.labels(PROTOCOL, outcome).inc(self.meter.audio_ms / 1000)
            with anyio.CancelScope(shield=True):
                await self.release_slot()

    def _start(self) -> Message:
        return {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"cache-control", b"no-store"),
                (b"x-cache", b"hit" if self.cached is not None else b"miss"),
            ],
        }

    def _source(self) -> AbstractAsyncContextManager[StreamedTranscript]:
        if self.cached is not None:
            return _replayed(self.cached)
        return self.open_stream()

    async def _watch_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                scope.cancel()
                return

    async def _relay(self, send: Send, pieces: StreamedTranscript) -> None:
        """Deltas to the client as they come, each counted once sent; the node's result (all
        of whose text the deltas carried), or why there is none."""
        try:
            async for piece in pieces:
                if isinstance(piece, TranscriptionResult):
                    self.result = piece
                    if piece.text == "".join(self.meter.pieces):
                        self.meter.sent_final(piece)
                elif piece.text:
                    event = sse(delta(piece.text))
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                    self.meter.sent(piece.text)
        except GatewayError as error:
            self.failure = error
        except OSError:
            self.client_gone = True

    async def _remember(self, charge: UsageCharge | None) -> None:
        """A complete, billed result goes to the result cache for the next request."""
        if charge is None or self.cached is not None or self.meter.final is None:
            return
        try:
            await self.remember(self.meter.final)
        except Exception:
            logger.exception("the streamed result could not be cached")

    def _outcome(self) -> str:
        if self.client_gone:
            return "client_gone"
        failed = self.failure is not None or self.meter.failure is not None
        return "failed" if failed or self.result is None else "completed"

    async def _finish(self, send: Send, charge: UsageCharge | None) -> None:
        failure = self.failure or self.meter.failure
        if failure is None and self.result is not None and charge is not None:
            done = {
                "type": "transcript.text.done",
                "text": self.result.text,
                "usage": usage_body(charge),
            }
            body = sse(done)
        else:
            failure = failure or GatewayError("The transcription ended without a result.")
            body = sse(failure.envelope())
        try:
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            self.client_gone = True


def delta(text: str) -> dict[str, Any]:
    return {"type": "transcript.text.delta", "delta": text}


@asynccontextmanager
async def _replayed(result: TranscriptionResult) -> AsyncIterator[StreamedTranscript]:
    async def pieces() -> StreamedTranscript:
        yield TranscriptDelta(result.text)
        yield result

    yield pieces()

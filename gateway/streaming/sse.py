"""``stream=true`` on ``POST /v1/audio/transcriptions``: Server-Sent Events as OpenAI sends
them, billed for exactly what was sent.

```
hold (worst case, before the 200) ──▶ 200 text/event-stream
  ├── node delta ──▶ data: {"type": "transcript.text.delta", "delta"} ─┐ (sent: counted)
  │      ... one per stretch of speech, as the node decodes it  ◀─────┘
  ├── node result ──▶ settle the whole text ──▶ data: {"type": "transcript.text.done",
  │                                                      "text", "usage" (the ledger row's)}
  ├── client gone ──▶ settle the text sent so far (nothing sent: release) ── no more events
  └── node failed ──▶ settle the text sent so far ──▶ data: {"error": {...}} (the SDK raises it)
```

A delta counts as sent once the server has taken it for the connection; the ledger row is
written before ``transcript.text.done`` goes out, so its ``usage`` is the row's. A cache hit
sends its transcript as one delta and is charged as any hit. Idle time costs nothing: the charge
is the tokens of the text sent.
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

from billing.errors import InsufficientQuota
from billing.usage.schemas import BillableTranscription, UsageCharge
from gateway import metrics
from gateway.billed.dispatch import RequestBilling
from gateway.billed.responses import partial_result, usage_body
from gateway.errors import GatewayError, QuotaExceeded, error_response
from gateway.nodes.streaming import StreamedTranscript, TranscriptDelta
from inference.protocol import TranscriptionResult

logger = logging.getLogger(__name__)

PROTOCOL = "sse"  # one of metrics.STREAM_PROTOCOLS
MEDIA_TYPE = "text/event-stream"


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


class MeteredTranscriptStream(Response):
    """An ASGI response streaming one billed transcription (see the module docstring)."""

    media_type = MEDIA_TYPE

    def __init__(
        self,
        *,
        billing: RequestBilling,
        model: str,
        audio_ms: int,
        cached: TranscriptionResult | None,
        open_stream: Callable[[], AbstractAsyncContextManager[StreamedTranscript]],
        remember: Callable[[TranscriptionResult], Awaitable[None]],
        release_slot: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(status_code=200, media_type=MEDIA_TYPE)
        self.release_slot = release_slot
        self.billing = billing
        self.model = model
        self.audio_ms = audio_ms
        self.cached = cached
        self.open_stream = open_stream
        self.remember = remember
        self.sent: list[str] = []  # the deltas the server took for the connection
        self.result: TranscriptionResult | None = None
        self.failure: GatewayError | None = None
        self.client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.OPEN_STREAMS.labels(PROTOCOL).inc()
        outcome = "failed"
        try:
            with self.billing.keep_alive():
                async with AsyncExitStack() as stack:
                    try:
                        pieces = await stack.enter_async_context(self._source())
                    except GatewayError as error:
                        # No node began: an ordinary error response, and nothing billed.
                        with anyio.CancelScope(shield=True):
                            await self.billing.abandon()
                        await error_response(error)(scope, receive, send)
                        return
                    charge: UsageCharge | None = None
                    try:
                        await send(self._start())
                        async with anyio.create_task_group() as group:
                            group.start_soon(self._watch_disconnect, receive, group.cancel_scope)
                            await self._relay(send, pieces)
                            group.cancel_scope.cancel()
                    finally:
                        # Also when the server cancels the response: what was sent is billed.
                        with anyio.CancelScope(shield=True):
                            charge = await self._settle()
                            outcome = self._outcome()
                if not self.client_gone:
                    await self._finish(send, charge)
        finally:
            metrics.OPEN_STREAMS.labels(PROTOCOL).dec()
            metrics.STREAMED_AUDIO_SECONDS.labels(PROTOCOL, outcome).inc(self.audio_ms / 1000)
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
        """Deltas to the client as they come; the node's result, or why there is none."""
        try:
            async for piece in pieces:
                if isinstance(piece, TranscriptionResult):
                    self.result = piece
                elif piece.text:
                    event = sse(delta(piece.text))
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                    self.sent.append(piece.text)
        except GatewayError as error:
            self.failure = error
        except OSError:
            self.client_gone = True

    async def _settle(self) -> UsageCharge | None:
        """Bill the text sent (all of it when the result came and the client stayed);
        nothing sent gives the hold back."""
        complete = self.result is not None and not self.client_gone and self.failure is None
        text = self.result.text if complete and self.result is not None else "".join(self.sent)
        if not text and not complete:
            await self.billing.abandon()
            return None
        billable = BillableTranscription(
            request_id=self.billing.request_id,
            caller=self.billing.caller,
            model=self.result.model if self.result is not None else self.model,
            audio_ms=self.audio_ms,
            transcript=text,
            cached=self.cached is not None,
        )
        stored = self.result if complete and self.result is not None else None
        try:
            settlement = await self.billing.settle(billable, stored or partial_result(billable))
        except InsufficientQuota as error:
            await self.billing.abandon()
            metrics.QUOTA_REJECTIONS.inc()
            self.failure = QuotaExceeded(error.message)
            return None
        metrics.record_charge(billable, settlement.charge)
        if stored is not None and self.cached is None:
            try:
                await self.remember(stored)
            except Exception:
                logger.exception("the streamed result could not be cached")
        return settlement.charge

    def _outcome(self) -> str:
        if self.client_gone:
            return "client_gone"
        return "failed" if self.failure is not None else "completed"

    async def _finish(self, send: Send, charge: UsageCharge | None) -> None:
        if self.failure is None and self.result is not None and charge is not None:
            done = {
                "type": "transcript.text.done",
                "text": self.result.text,
                "usage": usage_body(charge),
            }
            body = sse(done)
        else:
            failure = self.failure or GatewayError("The transcription ended without a result.")
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

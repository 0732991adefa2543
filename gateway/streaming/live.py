"""One turn of live speech decoded by an online model while it is spoken, billed on one row.

```
speech starts ──▶ hold the worst case of a whole item (GATEWAY_REALTIME_MAX_ITEM_SECONDS)
              │        └── does not fit ──▶ QuotaExceeded (nothing held, nothing sent)
              ├──▶ open a live stream on a node serving GATEWAY_ONLINE_MODEL
              │        └── none can ──▶ UpstreamUnavailable (the hold given back)
audio ────────┼──▶ the node ──▶ partial text ──▶ the client (each delta counted once sent)
turn ends ────┴──▶ the node's last text; in 2pass the whole turn again on the offline model
                   ──▶ settle: the text the client gets as the turn's final (2pass: the offline
                       text; online: the partials) ──▶ the session sends the final
client gone ──────▶ settle the partial text it was sent (none: the hold given back)
```

A turn that fails midway (the node's stream breaks, the offline pass fails) is billed for the
partial text its client was sent, and nothing more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from starlette.datastructures import State

from billing.errors import InsufficientQuota
from billing.keys.schemas import AuthenticatedKey
from billing.usage.schemas import BillableTranscription, UsageCharge
from gateway import metrics
from gateway.billed.dispatch import Order, RequestBilling
from gateway.billed.responses import partial_result
from gateway.context import new_request_id
from gateway.errors import GatewayError, QuotaExceeded
from gateway.nodes.live import NodeLiveStream
from gateway.streaming.items import wav
from gateway.transcriptions.service import transcript_usage
from inference.protocol import TranscribeParams, TranscriptionResult

logger = logging.getLogger(__name__)

LIVE_SAMPLE_RATE = 16_000  # what a node's online model takes


@dataclass(frozen=True)
class TurnOutcome:
    """What the session tells the client at the end of a turn."""

    final: TranscriptionResult | None  # the offline pass (2pass), None in online mode
    text: str  # the text billed
    charge: UsageCharge | None  # None when nothing was billed
    error: GatewayError | None  # why the turn ended early, if it did


class LiveTurn:
    """A turn's audio goes in with ``feed`` and ends with ``end``; ``outcome`` awaits its
    settlement. ``on_delta`` sends a partial text and says whether the client is still there."""

    def __init__(
        self,
        state: State,
        caller: AuthenticatedKey,
        *,
        online: TranscribeParams,
        offline: TranscribeParams | None,
        max_item_ms: int,
        on_delta: Callable[[str], Awaitable[bool]],
        protocol: str,
    ) -> None:
        self.state = state
        self.caller = caller
        self.online = online
        self.offline = offline
        self.max_item_ms = max_item_ms
        self.on_delta = on_delta
        self.protocol = protocol
        self.audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.pcm = bytearray()
        self.sent: list[str] = []
        self.client_gone = False
        self.task = asyncio.create_task(self._run())

    def feed(self, pcm: bytes) -> None:
        if not self.task.done():
            self.pcm += pcm
            self.audio.put_nowait(pcm)

    def end(self) -> None:
        self.audio.put_nowait(None)

    def cancel(self) -> None:
        """The client has gone: bill what it was sent, stop the rest."""
        self.client_gone = True
        self.task.cancel()

    async def outcome(self) -> TurnOutcome:
        return await self.task

    @property
    def audio_ms(self) -> int:
        return len(self.pcm) * 1000 // (2 * LIVE_SAMPLE_RATE)

    async def _run(self) -> TurnOutcome:
        billing = RequestBilling(
            ledger=self.state.ledger,
            leases=self.state.lease_keeper,
            client_gone=self._gone,
            request_id=new_request_id(),
            caller=self.caller,
        )
        try:
            await billing.hold(Order(self.max_item_ms, _never, transcript_usage))
        except InsufficientQuota as refused:
            metrics.QUOTA_REJECTIONS.inc()
            raise QuotaExceeded(refused.message) from None
        final: TranscriptionResult | None = None
        error: GatewayError | None = None
        try:
            with billing.keep_alive():
                try:
                    async with self.state.nodes.open_live(self.online) as stream:
                        async with anyio.create_task_group() as group:
                            group.start_soon(self._pump, stream)
                            async for text in stream.deltas():
                                await self._relay(text)
                    if self.offline is not None and not self.client_gone:
                        final = await self._offline_pass()
                except GatewayError as failure:
                    error = failure
        finally:
            with anyio.CancelScope(shield=True):
                outcome = await self._settle(billing, final, error)
        return outcome

    async def _pump(self, stream: NodeLiveStream) -> None:
        while (pcm := await self.audio.get()) is not None:
            await stream.send(pcm)
        await stream.end()

    async def _relay(self, text: str) -> None:
        if self.client_gone:
            return
        if await self.on_delta(text):
            self.sent.append(text)
        else:
            self.client_gone = True

    async def _offline_pass(self) -> TranscriptionResult | None:
        assert self.offline is not None
        if not self.pcm:
            return None
        result: TranscriptionResult = await self.state.nodes.transcribe(
            wav(bytes(self.pcm), LIVE_SAMPLE_RATE),
            "item.wav",
            "audio/wav",
            self.offline,
            audio_ms=self.audio_ms,
        )
        return result

    async def _gone(self) -> bool:
        return self.client_gone

    async def _settle(
        self,
        billing: RequestBilling,
        final: TranscriptionResult | None,
        error: GatewayError | None,
    ) -> TurnOutcome:
        """The final's text for a client still there, else the partials it was sent."""
        partials = "".join(self.sent)
        delivered = final is not None and not self.client_gone
        text = final.text if delivered and final is not None else partials
        outcome = "client_gone" if self.client_gone else "failed" if error else "completed"
        metrics.STREAMED_AUDIO_SECONDS.labels(self.protocol, outcome).inc(self.audio_ms / 1000)
        if not text and (self.client_gone or error is not None):
            await billing.abandon()
            return TurnOutcome(None, "", None, error)
        model = final.model if delivered and final is not None else str(self.online.model)
        billable = BillableTranscription(
            request_id=billing.request_id,
            caller=self.caller,
            model=model,
            audio_ms=self.audio_ms,
            transcript=text,
            cached=False,
        )
        stored = final if delivered and final is not None else partial_result(billable)
        try:
            settlement = await billing.settle(billable, stored)
        except InsufficientQuota as refused:
            await billing.abandon()
            metrics.QUOTA_REJECTIONS.inc()
            return TurnOutcome(None, "", None, QuotaExceeded(refused.message))
        metrics.record_charge(billable, settlement.charge)
        return TurnOutcome(final if delivered else None, text, settlement.charge, error)


async def _never() -> TranscriptionResult:
    raise AssertionError("a live turn produces its text itself")

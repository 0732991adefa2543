"""One turn of live speech decoded by an online model while it is spoken, billed on one row
through the streamed money sequence (``gateway.billed.stream``).

```
speech starts ──▶ hold the worst case of a whole item (GATEWAY_REALTIME_MAX_ITEM_SECONDS)
              │        └── does not fit ──▶ QuotaExceeded (nothing held, nothing sent)
              ├──▶ open a live stream on a node serving GATEWAY_ONLINE_MODEL
              │        └── none can ──▶ UpstreamUnavailable (the hold given back)
audio ────────┼──▶ the node ──▶ partial text ──▶ the client (each delta counted once sent)
turn ends ────┴──▶ the node's last text; in 2pass the whole turn again on the offline model,
                   sent to the client as the turn's final (``on_final``)
                   ──▶ settle: the final's text when the client was sent it, else the partials
client gone ──────▶ settle the partial text it was sent (none: the hold given back)
```

A turn that fails midway (the node's stream breaks, the offline pass fails) ends with its error
in the outcome, billed for the partial text its client was sent and nothing more; the session
tells the client and goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from starlette.datastructures import State

from billing.keys.schemas import AuthenticatedKey
from billing.usage.schemas import UsageCharge
from gateway.billed.stream import DeliveryMeter
from gateway.errors import GatewayError
from gateway.nodes.live import NodeLiveStream
from gateway.streaming.items import item_billing, pcm_ms, streamed_audio, transcribe_pcm
from inference.protocol import TranscribeParams, TranscriptionResult

logger = logging.getLogger(__name__)

LIVE_SAMPLE_RATE = 16_000  # what a node's online model takes


@dataclass(frozen=True)
class TurnOutcome:
    """How a turn ended."""

    final: TranscriptionResult | None  # the offline pass (2pass) the client was sent
    text: str  # the text the client was sent: the final's, else the partials
    charge: UsageCharge | None  # None when nothing was billed
    error: GatewayError | None  # why the turn ended early, or could not be billed


class LiveTurn:
    """A turn's audio goes in with ``feed`` and ends with ``end``; ``outcome`` awaits its
    settlement. ``on_delta`` sends a partial text, ``on_final`` the offline pass's result; each
    says whether the client took it."""

    def __init__(
        self,
        state: State,
        caller: AuthenticatedKey,
        *,
        online: TranscribeParams,
        offline: TranscribeParams | None,
        max_item_ms: int,
        on_delta: Callable[[str], Awaitable[bool]],
        on_final: Callable[[TranscriptionResult], Awaitable[bool]] | None = None,
        protocol: str,
    ) -> None:
        self.state = state
        self.caller = caller
        self.online = online
        self.offline = offline
        self.max_item_ms = max_item_ms
        self.on_delta = on_delta
        self.on_final = on_final
        self.protocol = protocol
        self.audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.pcm = bytearray()
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
        return pcm_ms(self.pcm, LIVE_SAMPLE_RATE)

    async def _run(self) -> TurnOutcome:
        meter = await DeliveryMeter.open(
            item_billing(self.state, self.caller),
            model=str(self.online.model),
            audio_ms=self.max_item_ms,
        )
        error: GatewayError | None = None
        try:
            try:
                async with self.state.nodes.open_live(self.online) as stream:
                    async with anyio.create_task_group() as group:
                        group.start_soon(self._pump, stream)
                        async for text in stream.deltas():
                            await self._relay(text, meter)
                await self._final_pass(meter)
            except GatewayError as failure:
                error = failure
            except BaseExceptionGroup as failures:
                # A node stream that broke inside the task group: the turn's error, not the
                # session's.
                error = gateway_error_in(failures)
        finally:
            meter.audio_ms = self.audio_ms
            charge = await meter.settle()
            outcome = "client_gone" if self.client_gone else "failed" if error else "completed"
            streamed_audio(self.protocol, outcome, self.audio_ms)
        return TurnOutcome(meter.final, meter.delivered, charge, error or meter.failure)

    async def _pump(self, stream: NodeLiveStream) -> None:
        while (pcm := await self.audio.get()) is not None:
            await stream.send(pcm)
        await stream.end()

    async def _relay(self, text: str, meter: DeliveryMeter) -> None:
        if self.client_gone:
            return
        if await self.on_delta(text):
            meter.sent(text)
        else:
            self.client_gone = True

    async def _final_pass(self, meter: DeliveryMeter) -> None:
        """2pass: the whole turn again on the offline model, sent as the turn's final."""
        if self.offline is None or self.on_final is None or self.client_gone or not self.pcm:
            return
        final = await transcribe_pcm(self.state, bytes(self.pcm), LIVE_SAMPLE_RATE, self.offline)
        if await self.on_final(final):
            meter.sent_final(final)
        else:
            self.client_gone = True


def gateway_error_in(failures: BaseExceptionGroup[BaseException]) -> GatewayError:
    """The first ``GatewayError`` of an exception group; anything else is raised again."""
    matched, rest = failures.split(GatewayError)
    if rest is not None or matched is None:
        raise failures
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, GatewayError)
    return first

"""The money sequence of a streamed answer, written once: ``stream=true`` (SSE), each realtime
item, each FunASR turn and offline chunk, and live partials all meter their text through a
``DeliveryMeter``.

```
open ──▶ hold the worst case of the audio ───────────────────▶ 402 / 503: nothing held, raised
     └─▶ a cached answer: charged now, before its first byte ─▶ 402 / 503: nothing sent, raised
sent(text)          after each piece the client took (a delta, a partial): counted
sent_final(result)  after the whole text was sent as the item's final: billed in place of
                    the pieces
settle() ──▶ one usage row for the text delivered, then the charge recorded as returned
         └─▶ nothing delivered: the hold given back, nothing billed
```

``settle()`` runs once, shielded from cancellation; ``metered()`` calls it on any way out of
its block (an error, a cancellation, a client that left), so the text a client was sent is
billed whatever ends the stream, and text it was not sent never is. What the settlement could
not do (the hold had expired and the credit no longer covers it; the ledger is unreachable) is
kept as ``failure`` for the stream to tell its client; nothing is billed then.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import anyio

from billing.usage.schemas import BillableTranscription, UsageCharge
from gateway.billed.dispatch import (
    RequestBilling,
    abandon_quietly,
    hold_worst_case,
    settle_billed,
)
from gateway.billed.responses import partial_result
from gateway.errors import GatewayError
from inference.protocol import TranscriptionResult

logger = logging.getLogger(__name__)


class DeliveryMeter:
    """One streamed answer's money: what was held, what the client was sent, what it cost."""

    def __init__(self, billing: RequestBilling, *, model: str, audio_ms: int) -> None:
        self.billing = billing
        self.model = model
        self.audio_ms = audio_ms  # the length billed; a live turn sets it once its audio ended
        self.pieces: list[str] = []  # the pieces of text the client took, in order
        self.final: TranscriptionResult | None = None  # sent whole as the final
        self.cached = False
        self.charge: UsageCharge | None = None
        self.failure: GatewayError | None = None
        self.settled = False
        self._alive = ExitStack()

    @classmethod
    async def open(
        cls,
        billing: RequestBilling,
        *,
        model: str,
        audio_ms: int,
        cached: TranscriptionResult | None = None,
    ) -> DeliveryMeter:
        """Hold the worst case of ``audio_ms`` (a ``cached`` answer: charge it now, at the
        plan's cache-hit price). Raises ``QuotaExceeded`` or ``LedgerUnavailable`` with nothing
        held."""
        meter = cls(billing, model=model, audio_ms=audio_ms)
        await hold_worst_case(billing, audio_ms, cached=cached is not None)
        if cached is not None:
            meter.cached = True
            settlement = await settle_billed(
                billing, meter._billable(cached.text, cached.model), cached
            )
            meter.charge = settlement.charge
        meter._alive.enter_context(billing.keep_alive())
        return meter

    def sent(self, text: str) -> None:
        """A piece of the text reached the client (the server took it for the connection)."""
        if text:
            self.pieces.append(text)

    def sent_final(self, result: TranscriptionResult) -> None:
        """The client was sent ``result.text`` whole, as the answer's final: billed in place of
        the pieces sent before it (a 2pass turn's offline text, an item's transcript)."""
        self.final = result

    @property
    def delivered(self) -> str:
        """The text the client has: its final when one was sent, else the pieces."""
        return self.final.text if self.final is not None else "".join(self.pieces)

    async def settle(self) -> UsageCharge | None:
        """Bill the text delivered (nothing delivered: give the hold back); once, shielded.
        None when nothing was billed (then ``failure`` says why, when something failed)."""
        with anyio.CancelScope(shield=True):
            if not self.settled:
                self.settled = True
                try:
                    await self._settle()
                finally:
                    self._alive.close()
        return self.charge

    async def _settle(self) -> None:
        if self.cached:
            # Charged before its first byte; what reached the client is what it was told.
            if self.charge is not None and self.pieces:
                await self._record_returned(self.charge)
            return
        if self.final is None and not self.pieces:
            await abandon_quietly(self.billing)
            return
        model = self.final.model if self.final is not None else self.model
        billable = self._billable(self.delivered, model)
        stored = self.final or partial_result(billable)
        try:
            settlement = await settle_billed(self.billing, billable, stored)
        except GatewayError as refused:
            self.failure = refused  # its hold was given back: nothing is billed
            return
        self.charge = settlement.charge
        await self._record_returned(settlement.charge)

    async def _record_returned(self, charge: UsageCharge) -> None:
        try:
            await self.billing.returned(charge)
        except Exception:
            # The row stands; reconciliation reports it as billed but not returned.
            logger.exception("could not record the charge returned for %s", charge.request_id)

    def _billable(self, text: str, model: str) -> BillableTranscription:
        return BillableTranscription(
            request_id=self.billing.request_id,
            caller=self.billing.caller,
            model=model,
            audio_ms=self.audio_ms,
            transcript=text,
            cached=self.cached,
        )


@asynccontextmanager
async def metered(
    billing: RequestBilling,
    *,
    model: str,
    audio_ms: int,
    cached: TranscriptionResult | None = None,
) -> AsyncIterator[DeliveryMeter]:
    """A ``DeliveryMeter`` opened for the block and settled on its way out, however it ends."""
    meter = await DeliveryMeter.open(billing, model=model, audio_ms=audio_ms, cached=cached)
    try:
        yield meter
    finally:
        await meter.settle()

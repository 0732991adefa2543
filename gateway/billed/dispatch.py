"""The money sequence of a billed request, written once:

```
hold (shielded) ──▶ produce (node, or the result cache) ──▶ settle (shielded) ──▶ Billed
  │                        └── any failure or cancellation ──▶ abandon (nothing billed) ──▶ raise
  └── 402 / 503 ledger_unavailable ──▶ abandon (an Idempotency-Key given up) ──▶ raise
```

``Billing`` says how one kind of request writes its money: a synchronous request holds its
worst case just before dispatch and gives it back on failure (``RequestBilling``); a job held
its worst case when it was queued and settles under its lease (``gateway.jobs.worker``). The
sequence itself, and what reaches the ledger, is the same for every route; its streamed form
(billed on what the client was sent) is ``gateway.billed.stream``.

The ledger's refusals become the customer API's errors here and nowhere else
(``ledger_refusals``): ``InsufficientQuota`` is 402 ``insufficient_quota``, a ledger that cannot
be reached is 503 ``ledger_unavailable``. Holds and settlements run shielded from cancellation:
a request cancelled while one is written lets it finish, so what the ledger holds is what the
gateway knows, and the next checkpoint gives the hold back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel
from pydantic import BaseModel

from billing.errors import InsufficientQuota
from billing.errors import LedgerUnavailable as BillingLedgerUnavailable
from billing.idempotency.service import Lease
from billing.keys.schemas import AuthenticatedKey
from billing.models.types import utcnow
from billing.reservations.repository import KeyCompletion
from billing.reservations.service import Settlement, plan_hold
from billing.usage.schemas import BillableTranscription, UsageCharge
from gateway import metrics
from gateway.billed.leases import LeaseKeeper
from gateway.errors import ClientGone, LedgerUnavailable, QuotaExceeded
from gateway.ledger import Ledger

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)
LEDGER_UNAVAILABLE_MESSAGE = (
    "The billing ledger is busy or unreachable; nothing was billed. Retry shortly."
)


@dataclass(frozen=True)
class Usage:
    """What a result is billed for: the text counted in the plan's unit (a transcript, or a
    detected language's code), the model, and the audio's length."""

    text: str
    model: str
    audio_ms: int


@dataclass(frozen=True)
class Order(Generic[R]):
    """One unit of billed work, checked and ready: what it may cost and how to produce it."""

    audio_ms: int  # the measured length, which bounds the reservation
    produce: Callable[[], Awaitable[R]]
    usage_of: Callable[[R], Usage]
    cached: R | None = None  # answered by the result cache: held and billed at the hit price


@dataclass(frozen=True)
class Billed(Generic[R]):
    result: R
    charge: UsageCharge
    cached: bool
    replayed: bool = False


class Billing(Protocol):
    """How one kind of billed request writes its money (see the module docstring)."""

    request_id: str
    caller: AuthenticatedKey

    async def hold(self, audio_ms: int, *, cached: bool) -> None: ...

    def keep_alive(self) -> AbstractContextManager[object]: ...

    async def before_settle(self) -> None: ...

    async def abandon(self) -> None: ...

    async def settle(self, billable: BillableTranscription, result: BaseModel) -> Settlement: ...


@contextmanager
def ledger_refusals() -> Iterator[None]:
    """The ledger's refusals as the customer API's errors (the one place they are mapped)."""
    try:
        yield
    except InsufficientQuota as error:
        metrics.QUOTA_REJECTIONS.inc()
        raise QuotaExceeded(error.message) from None
    except BillingLedgerUnavailable as error:
        logger.warning("ledger unavailable: %s", error.message)
        raise LedgerUnavailable(LEDGER_UNAVAILABLE_MESSAGE, retry_after_seconds=1) from None


async def hold_worst_case(billing: Billing, audio_ms: int, *, cached: bool) -> None:
    """Hold what the request may cost. A refusal (402, 503) gives the request up, its
    Idempotency-Key freed for a retry; a cancellation waits for the hold, then gives it back."""
    try:
        with anyio.CancelScope(shield=True), ledger_refusals():
            await billing.hold(audio_ms, cached=cached)
        await anyio.lowlevel.checkpoint()
    except BaseException:
        await abandon_quietly(billing)
        raise


async def abandon_quietly(billing: Billing) -> None:
    """``billing.abandon()``, shielded; a ledger that fails it leaves the hold to the sweeper
    (it expires with its lease) rather than hiding the error that got here."""
    with anyio.CancelScope(shield=True):
        try:
            await billing.abandon()
        except Exception:
            logger.exception("could not give back the hold of request %s", billing.request_id)


async def run_billed(billing: Billing, order: Order[R], result_type: type[R]) -> Billed[R]:
    """Hold, produce, settle: the one money sequence. Nothing is billed unless a result came
    back and its settlement committed; any failure before that gives the hold back."""
    cached = order.cached is not None
    await hold_worst_case(billing, order.audio_ms, cached=cached)
    with billing.keep_alive():
        try:
            result = order.cached if order.cached is not None else await order.produce()
            await billing.before_settle()
            usage = order.usage_of(result)
            billable = BillableTranscription(
                request_id=billing.request_id,
                caller=billing.caller,
                model=usage.model,
                audio_ms=usage.audio_ms,
                transcript=usage.text,
                cached=cached,
            )
        except BaseException:
            await abandon_quietly(billing)
            raise
        settlement = await settle_billed(billing, billable, result)
    if settlement.stored_result is not None:
        # Another attempt of the same Idempotency-Key settled first: answer what it billed.
        result = result_type.model_validate_json(settlement.stored_result)
    return Billed(result, settlement.charge, cached)


async def settle_billed(
    billing: Billing, billable: BillableTranscription, result: BaseModel
) -> Settlement:
    """Settle ``billable`` (its result stored for ``result``'s Idempotency-Key), shielded from
    cancellation, and count its charge. Refused (the hold had expired and was given back, and
    what is left no longer covers the charge; the ledger unreachable) or failed any other way,
    the hold is given back and the API's error raised."""
    try:
        with anyio.CancelScope(shield=True), ledger_refusals():
            settlement = await billing.settle(billable, result)
    except BaseException:
        await abandon_quietly(billing)
        raise
    metrics.record_charge(billable, settlement.charge)
    return settlement


class RequestBilling:
    """A synchronous request's money: hold just before dispatch (or, for a retry that took an
    Idempotency-Key over, hold the original reservation again), keep it alive while the node
    works, give it back on failure, settle with the key's stored result. A cache hit holds
    nothing and is checked and charged at once when it settles."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        leases: LeaseKeeper,
        client_gone: Callable[[], Awaitable[bool]],
        request_id: str,
        caller: AuthenticatedKey,
        key_lease: Lease | None = None,
        taken_over: bool = False,
    ) -> None:
        self.ledger = ledger
        self.leases = leases
        self.client_gone = client_gone
        self.request_id = request_id
        self.caller = caller
        self.key_lease = key_lease
        self.taken_over = taken_over
        # A cache hit holds nothing: it is checked and charged in one statement at settlement.
        self.unheld_hit = False
        self.held = False  # a reservation of this request is open

    async def hold(self, audio_ms: int, *, cached: bool) -> None:
        if cached and not self.taken_over:
            self.unheld_hit = True
            return
        ttl = timedelta(seconds=self.leases.lease_seconds)
        hold = plan_hold(
            self.request_id, self.caller, audio_ms, ttl=ttl, now=utcnow(), cached=cached
        )
        if not self.taken_over:
            await self.ledger.reserve(self.caller, hold)
            self.held = True
            return
        # One reservation per key, ever: a crashed attempt's is still open (adopt it), was
        # released (hold it again), or was never made.
        state = await self.ledger.reopen(self.caller, hold)
        if state == "open":
            await self.ledger.renew(self.request_id, hold.expires_at)
        elif state is None:
            await self.ledger.reserve(self.caller, hold)
        self.held = state != "settled"

    def keep_alive(self) -> AbstractContextManager[object]:
        return self.leases.keep(self.request_id, self.key_lease)

    async def before_settle(self) -> None:
        # Without a key nothing could replay the result: a client that has left is not billed.
        if self.key_lease is None and await self.client_gone():
            raise ClientGone("The client disconnected before the result was ready.")

    async def abandon(self) -> None:
        if self.held:
            await self.ledger.release(self.request_id, self.caller.tenant_id)
            self.held = False
        if self.key_lease is not None:
            await self.ledger.give_up_key(self.key_lease)

    async def settle(self, billable: BillableTranscription, result: BaseModel) -> Settlement:
        key = None
        if self.key_lease is not None:
            key = KeyCompletion(self.key_lease.key, result.model_dump_json())
        if self.unheld_hit:
            return await self.ledger.charge_hit(billable, key)
        settlement = await self.ledger.settle(billable, key)
        self.held = False
        return settlement

    async def returned(self, charge: UsageCharge) -> None:
        """Record what the client was told (or sent) this request cost."""
        await self.ledger.record_returned(
            charge.request_id,
            self.caller.tenant_id,
            billed_tokens=charge.billed_tokens,
            cost_micros=charge.cost_micros,
        )

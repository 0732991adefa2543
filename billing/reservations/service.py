"""Reserve the worst case before dispatch, settle the actual cost after, release on failure.

```
reserve ──▶ open ──settle──▶ settled   (one usage row, the rest released)
            │ ▲ └──release──▶ released  (failure, or expired: its gateway stopped renewing it)
            │ └────reopen─────┘         (a retry of the same request holds it again)
            └──renew: a live request pushes its expiry on
```

The worst case of a request is ``ceil(audio_ms * max_tokens_per_audio_second / 1000)`` tokens at
the plan's price. It is also the most a request is ever billed: a transcript longer than the
bound is charged at the bound, so a prepaid balance never goes below zero. Every transition
locks the tenant's account row and updates its totals in the same transaction as the row it
inserts, so totals and rows cannot drift apart. A settlement that finds its reservation already
released (its gateway stalled past the expiry and the sweeper gave the hold back) takes the
charge from the account only if the credit and quota still cover it; otherwise it is refused and
nothing is billed.

Each transition is a ``billing.statements`` generator (``*_steps``), run by the blocking
wrappers here or on the event loop by ``billing.aio``. On PostgreSQL the usual reserve, settle
and release are one statement each; the slower paths after them (``settle_locked_steps``,
``reopen_steps``) need a transaction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from billing.errors import InsufficientQuota, NotFound
from billing.keys.schemas import AuthenticatedKey
from billing.models import Reservation
from billing.models.types import utcnow
from billing.money import cost_micros, format_micros
from billing.periods import billing_period
from billing.reservations import repository
from billing.reservations import statements as sql
from billing.reservations.repository import KeyCompletion, StateChange
from billing.reservations.schemas import Hold
from billing.statements import Fetch, Step, Steps, run
from billing.tokens import count_tokens
from billing.usage.schemas import BillableTranscription, UsageCharge


def token_bound(audio_ms: int, max_tokens_per_audio_second: int) -> int:
    return math.ceil(audio_ms * max_tokens_per_audio_second / 1000)


def unit_price(caller: AuthenticatedKey, *, cached: bool) -> int:
    """Micro-units per 1,000 tokens: the plan's price, or its cache-hit share of it."""
    price = caller.plan.price_per_1k_tokens_micros
    return price * caller.plan.cache_hit_price_bp // 10_000 if cached else price


@dataclass(frozen=True, slots=True)
class Settlement:
    """A settled request: its ledger charge, and the result another attempt of the same
    Idempotency-Key stored when that attempt settled first (to be answered instead)."""

    charge: UsageCharge
    stored_result: str | None = None


def plan_hold(
    request_id: str,
    caller: AuthenticatedKey,
    audio_ms: int,
    *,
    ttl: timedelta,
    now: datetime,
    cached: bool = False,
) -> Hold:
    """What reserving this request holds: its worst case at the price it will be charged (a
    request the result cache answers is held at the plan's cache-hit price)."""
    tokens = token_bound(audio_ms, caller.plan.max_tokens_per_audio_second)
    return Hold(
        request_id=request_id,
        tenant_id=caller.tenant_id,
        api_key_id=caller.key_id,
        period=billing_period(now),
        amount_micros=cost_micros(tokens, unit_price(caller, cached=cached)),
        tokens=tokens,
        created_at=now,
        expires_at=now + ttl,
    )


def reserve_steps(dialect: str, caller: AuthenticatedKey, hold: Hold) -> Steps[Hold]:
    """Hold ``hold``, or raise ``InsufficientQuota`` (nothing written). One statement on
    PostgreSQL, one more read when refused by the quota (for its message)."""
    quota = caller.plan.monthly_token_quota
    row = {**hold.model_dump(), "state": "open"}
    outcome = yield from repository.hold_steps(
        dialect, row, check_credit=caller.prepaid, quota=quota
    )
    if not outcome.held:
        yield from _refuse(caller, hold, outcome.available_micros)
    return hold


def reopen_steps(dialect: str, caller: AuthenticatedKey, hold: Hold) -> Steps[str | None]:
    """Hold a released reservation of the same request again (a retry under its original
    request id). Returns the state the reservation was found in: ``released`` (held again),
    ``open`` or ``settled`` (left alone), None (there is none). Raises ``InsufficientQuota``
    when the credit or quota no longer covers it. Run it in one transaction."""
    quota = caller.plan.monthly_token_quota
    row = {**hold.model_dump(), "state": "open"}
    state, outcome = yield from repository.reopen_steps(
        dialect, row, check_credit=caller.prepaid, quota=quota
    )
    if state == "released" and not outcome.held:
        yield from _refuse(caller, hold, outcome.available_micros)
    return state


def _refuse(caller: AuthenticatedKey, hold: Hold, available: int) -> Steps[None]:
    plan = caller.plan
    if caller.prepaid and available < hold.amount_micros:
        raise InsufficientQuota(
            f"This request may cost up to {format_micros(hold.amount_micros, plan.currency)} "
            f"and the remaining credit is {format_micros(max(available, 0), plan.currency)}."
            " Top up the account to continue."
        )
    quota = plan.monthly_token_quota
    assert quota is not None  # the credit or the quota refuses a hold, nothing else
    params = {"tenant": caller.tenant_id, "period": hold.period}
    used = int((yield Step(sql.tokens_held(), params, Fetch.scalar)) or 0)
    raise InsufficientQuota(
        f"This request may produce up to {hold.tokens} tokens and {max(quota - used, 0)} of "
        f"the monthly quota of {quota} are left for {hold.period}."
    )


def renew_steps(request_id: str, expires_at: datetime) -> Steps[bool]:
    """Push an open reservation's expiry on (a request still running); False when closed."""
    return (yield from repository.renew_steps(request_id, expires_at))


def charge_of(billable: BillableTranscription, billed_tokens: int | None = None) -> UsageCharge:
    """The charge of a transcript: its tokens in the plan's unit (capped at ``billed_tokens``
    when given) at the price it was reserved at."""
    plan = billable.caller.plan
    output_tokens = count_tokens(billable.transcript, plan.token_unit)
    billed = output_tokens if billed_tokens is None else min(output_tokens, billed_tokens)
    price = unit_price(billable.caller, cached=billable.cached)
    return UsageCharge(
        request_id=billable.request_id,
        output_tokens=output_tokens,
        billed_tokens=billed,
        token_unit=plan.token_unit.value,
        price_per_1k_tokens_micros=price,
        cost_micros=cost_micros(billed, price),
        currency=plan.currency,
        audio_ms=billable.audio_ms,
    )


def settle_fast_steps(
    dialect: str,
    billable: BillableTranscription,
    charge: UsageCharge,
    now: datetime,
    key: KeyCompletion | None = None,
) -> Steps[bool]:
    """The usual settlement, in one statement on PostgreSQL: the reservation is open and the
    transcript within its bound, so the charge is known before the reservation is read. False
    (nothing written) otherwise: then ``settle_locked_steps``."""
    change = _settlement(billable, charge, "open", now, min_tokens=charge.output_tokens)
    usage = _usage_row(billable, charge, now)
    return (yield from repository.close_steps(dialect, change, usage, key))


def settle_locked_steps(
    dialect: str,
    billable: BillableTranscription,
    now: datetime,
    key: KeyCompletion | None = None,
) -> Steps[Settlement]:
    """Settle under the account lock: the transcript passes its bound (charged at the bound),
    the reservation was released by the sweeper (charged only if credit and quota still cover
    it, else ``InsufficientQuota`` and nothing written), or it is settled already (its first
    charge, and the result that settlement stored for ``key``). Run it in one transaction."""
    caller = billable.caller
    while True:
        held = yield from repository.lock_and_read_steps(caller.tenant_id, billable.request_id)
        if held is None:
            raise NotFound(f"no reservation for request {billable.request_id}")
        if held.state == "settled":
            return (yield from _settled_before(billable, key))
        charge = charge_of(billable, billed_tokens=held.tokens)
        if held.state == "released":
            month_tokens = 0
            if caller.plan.monthly_token_quota is not None:
                month_tokens = yield from repository.locked_month_tokens_steps(
                    caller.tenant_id, held.period
                )
            _refuse_late_settlement(caller, charge, held, month_tokens)
        change = _settlement(billable, charge, held.state, now)
        usage = _usage_row(billable, charge, now)
        if (yield from repository.close_steps(dialect, change, usage, key)):
            return Settlement(charge)
        # Its state changed between this read and the lock; the next read, locked, is current.
        # States only move forward (open → released → settled), so this ends.


def _refuse_late_settlement(
    caller: AuthenticatedKey,
    charge: UsageCharge,
    held: repository.LockedReservation,
    month_tokens: int,
) -> None:
    """A released reservation holds nothing: its charge is taken only from what is left (the
    credit as locked, and ``month_tokens``: the month's tokens read under its own lock)."""
    plan = caller.plan
    if caller.prepaid and held.available_micros < charge.cost_micros:
        raise InsufficientQuota(
            f"The request's reservation expired before it finished, and the remaining credit "
            f"({format_micros(max(held.available_micros, 0), plan.currency)}) does not cover "
            f"its cost of {format_micros(charge.cost_micros, plan.currency)}. Nothing was billed."
        )
    quota = plan.monthly_token_quota
    if quota is not None and month_tokens + charge.billed_tokens > quota:
        raise InsufficientQuota(
            "The request's reservation expired before it finished, and the monthly quota no "
            f"longer covers its {charge.billed_tokens} tokens. Nothing was billed."
        )


def _settled_before(
    billable: BillableTranscription, key: KeyCompletion | None
) -> Steps[Settlement]:
    existing = yield Step(sql.usage_row_of(), {"request": billable.request_id}, Fetch.first)
    assert existing is not None  # a settled reservation always has its row
    charge = UsageCharge.model_validate(existing, from_attributes=True)
    if key is None:
        return Settlement(charge)
    params = {"tenant": billable.caller.tenant_id, "record_key": key.key}
    stored = yield Step(sql.stored_result(), params, Fetch.scalar)
    if stored is None:
        # Settled by an attempt that could not store its result (recorded before results
        # were kept): complete the key with this one's, billed at the ledger's charge.
        completion = {
            "tenant": billable.caller.tenant_id,
            "idempotency_key": key.key,
            "request": billable.request_id,
            "idempotency_result": key.result,
            "now": utcnow(),
        }
        yield Step(sql.complete_key(None), completion)
    return Settlement(charge, stored)


def charge_hit_steps(
    dialect: str,
    billable: BillableTranscription,
    now: datetime,
    key: KeyCompletion | None = None,
) -> Steps[Settlement]:
    """Charge a request the result cache answered, at the plan's cache-hit price, with no
    reservation: a free hit is one insert-and-count; a paid one checks the credit and charges
    it in the same statement. ``InsufficientQuota`` (nothing written) when the credit or the
    month's quota does not cover it. Billed at most the bound of its audio's length, as a
    transcription is."""
    caller = billable.caller
    plan = caller.plan
    bound = token_bound(billable.audio_ms, plan.max_tokens_per_audio_second)
    charge = charge_of(billable, billed_tokens=bound)
    paid = charge.cost_micros > 0
    outcome = yield from repository.charge_hit_steps(
        dialect,
        caller.tenant_id,
        billing_period(now),
        _usage_row(billable, charge, now),
        check_credit=caller.prepaid and paid,
        quota=plan.monthly_token_quota,
        key=key,
    )
    if not outcome.held:
        if caller.prepaid and paid and outcome.available_micros < charge.cost_micros:
            raise InsufficientQuota(
                f"This cached answer costs {format_micros(charge.cost_micros, plan.currency)} "
                "and the remaining credit is "
                f"{format_micros(max(outcome.available_micros, 0), plan.currency)}."
                " Top up the account to continue."
            )
        raise InsufficientQuota(
            f"This answer's {charge.billed_tokens} tokens do not fit the monthly quota of "
            f"{plan.monthly_token_quota} for {billing_period(now)}."
        )
    return Settlement(charge)


def release_steps(
    dialect: str, request_id: str, tenant_id: int | None, now: datetime
) -> Steps[bool]:
    """Give a failed request's reservation back; False when it was no longer open. With the
    tenant known (the gateway knows its caller), one statement on PostgreSQL."""
    if tenant_id is None:
        tenant_id = yield from repository.tenant_of_steps(request_id)
        if tenant_id is None:
            return False
    change = StateChange(
        request_id=request_id,
        tenant_id=tenant_id,
        from_state="open",
        to_state="released",
        closed_at=now,
    )
    # Under the account lock, the state change re-checks that it is still open.
    return (yield from repository.close_steps(dialect, change))


def _settlement(
    billable: BillableTranscription,
    charge: UsageCharge,
    from_state: str,
    now: datetime,
    *,
    min_tokens: int = 0,
) -> StateChange:
    return StateChange(
        request_id=billable.request_id,
        tenant_id=billable.caller.tenant_id,
        from_state=from_state,
        to_state="settled",
        closed_at=now,
        min_tokens=min_tokens,
        spent_micros=charge.cost_micros,
        used_tokens=charge.billed_tokens,
    )


def _usage_row(
    billable: BillableTranscription, charge: UsageCharge, now: datetime
) -> dict[str, Any]:
    """The ledger row: exactly the charge the client is told, and who, what and when."""
    return {
        **charge.model_dump(),
        "tenant_id": billable.caller.tenant_id,
        "api_key_id": billable.caller.key_id,
        "model": billable.model,
        "cached": billable.cached,
        "created_at": now,
    }


# Blocking forms, inside the caller's session and transaction.


def _dialect(session: Session) -> str:
    return session.connection().dialect.name


def reserve(
    session: Session,
    request_id: str,
    caller: AuthenticatedKey,
    audio_ms: int,
    *,
    ttl: timedelta,
    now: datetime | None = None,
    cached: bool = False,
) -> Hold:
    """Hold the worst-case cost of a request, or raise ``InsufficientQuota``."""
    hold = plan_hold(request_id, caller, audio_ms, ttl=ttl, now=now or utcnow(), cached=cached)
    return run(session.connection(), reserve_steps(_dialect(session), caller, hold))


def settle(
    session: Session,
    billable: BillableTranscription,
    *,
    now: datetime | None = None,
    key: KeyCompletion | None = None,
) -> UsageCharge:
    """Write the request's one usage row at its actual cost and close its reservation.
    Settling twice returns the first charge."""
    return settle_request(session, billable, now=now, key=key).charge


def settle_request(
    session: Session,
    billable: BillableTranscription,
    *,
    now: datetime | None = None,
    key: KeyCompletion | None = None,
) -> Settlement:
    now = now or utcnow()
    dialect = _dialect(session)
    connection = session.connection()
    charge = charge_of(billable)
    if run(connection, settle_fast_steps(dialect, billable, charge, now, key)):
        return Settlement(charge)
    return run(connection, settle_locked_steps(dialect, billable, now, key))


def charge_hit(
    session: Session,
    billable: BillableTranscription,
    *,
    now: datetime | None = None,
    key: KeyCompletion | None = None,
) -> Settlement:
    """A cache hit's usage row and charge, with no reservation (``charge_hit_steps``)."""
    steps = charge_hit_steps(_dialect(session), billable, now or utcnow(), key)
    return run(session.connection(), steps)


def release(
    session: Session,
    request_id: str,
    *,
    now: datetime | None = None,
    tenant_id: int | None = None,
) -> bool:
    """Give a failed request's reservation back; False when it was no longer open."""
    steps = release_steps(_dialect(session), request_id, tenant_id, now or utcnow())
    return run(session.connection(), steps)


def expired_request_ids(session: Session, now: datetime, limit: int = 500) -> list[str]:
    statement = (
        select(Reservation.request_id)
        .where(Reservation.state == "open", col(Reservation.expires_at) < now)
        .order_by(col(Reservation.expires_at))
        .limit(limit)
    )
    return list(session.exec(statement).all())

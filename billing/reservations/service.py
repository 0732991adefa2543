"""Reserve the worst case before dispatch, settle the actual cost after, release on failure.

```
reserve ──▶ open ──settle──▶ settled   (one usage row, actual cost, rest released)
              └────release──▶ released  (failure, or expired after a crashed gateway)
```

The worst case of a request is ``ceil(audio_ms * max_tokens_per_audio_second / 1000)`` tokens at
the plan's price. It is also the most a request is ever billed: a transcript longer than the
bound is charged at the bound, so a prepaid balance never goes below zero. Every transition
locks the tenant's account row and updates its totals in the same transaction as the row it
inserts, so totals and rows cannot drift apart.
"""

from __future__ import annotations

import math
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
from billing.reservations.repository import Closing
from billing.reservations.schemas import Hold
from billing.tokens import count_tokens
from billing.usage import repository as usage_repository
from billing.usage.schemas import BillableTranscription, UsageCharge
from billing.usage.service import charge_for


def token_bound(audio_ms: int, max_tokens_per_audio_second: int) -> int:
    return math.ceil(audio_ms * max_tokens_per_audio_second / 1000)


def unit_price(caller: AuthenticatedKey, *, cached: bool) -> int:
    """Micro-units per 1,000 tokens: the plan's price, or its cache-hit share of it."""
    price = caller.plan.price_per_1k_tokens_micros
    return price * caller.plan.cache_hit_price_bp // 10_000 if cached else price


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
    """Hold the worst-case cost of a request, or raise ``InsufficientQuota``. A request the
    result cache answers (``cached``) is held at the plan's cache-hit price, which is what
    settling it will charge."""
    now = now or utcnow()
    plan = caller.plan
    tokens = token_bound(audio_ms, plan.max_tokens_per_audio_second)
    amount = cost_micros(tokens, unit_price(caller, cached=cached))
    period = billing_period(now)
    hold = Hold(
        request_id=request_id,
        tenant_id=caller.tenant_id,
        api_key_id=caller.key_id,
        period=period,
        amount_micros=amount,
        tokens=tokens,
        created_at=now,
        expires_at=now + ttl,
    )
    quota = plan.monthly_token_quota
    available, held = repository.hold(
        session, {**hold.model_dump(), "state": "open"}, check_credit=caller.prepaid, quota=quota
    )
    if held:
        return hold
    if caller.prepaid and available < amount:
        raise InsufficientQuota(
            f"This request may cost up to {format_micros(amount, plan.currency)} and the "
            f"remaining credit is {format_micros(max(available, 0), plan.currency)}."
            " Top up the account to continue."
        )
    assert quota is not None  # the credit or the quota refuses a hold, nothing else
    used = repository.tokens_held(session, caller.tenant_id, period)
    raise InsufficientQuota(
        f"This request may produce up to {tokens} tokens and {max(quota - used, 0)} of the "
        f"monthly quota of {quota} are left for {period}."
    )


def settle(
    session: Session, billable: BillableTranscription, *, now: datetime | None = None
) -> UsageCharge:
    """Write the request's one usage row at its actual cost and close its reservation.

    Settling twice returns the first charge; settling a reservation the sweeper already
    released still bills the finished transcript exactly once. The account lock, taken first,
    serializes every transition of this tenant's reservations.
    """
    now = now or utcnow()
    output_tokens = count_tokens(billable.transcript, billable.caller.plan.token_unit)
    # The usual case, in one statement: the reservation is open and the transcript is within
    # its bound, so the charge is known before the reservation is read.
    charge = _charge(billable, output_tokens, billed_tokens=output_tokens)
    closing = _settlement(billable, charge, "open", now, min_tokens=output_tokens)
    if repository.close(session, closing, _usage_row(billable, charge, now)):
        return charge
    while True:
        held = repository.lock_account_and_read(
            session, billable.caller.tenant_id, billable.request_id
        )
        if held is None:
            raise NotFound(f"no reservation for request {billable.request_id}")
        if held.state == "settled":
            existing = usage_repository.get_usage_event(session, billable.request_id)
            assert existing is not None  # a settled reservation always has its row
            return charge_for(existing)
        charge = _charge(billable, output_tokens, billed_tokens=min(output_tokens, held.tokens))
        closing = _settlement(billable, charge, held.state, now)
        if repository.close(session, closing, _usage_row(billable, charge, now)):
            return charge
        # Its state changed between this read and the lock; the next read, locked, is current.
        # States only move forward (open → released → settled), so this ends.


def _charge(
    billable: BillableTranscription, output_tokens: int, *, billed_tokens: int
) -> UsageCharge:
    plan = billable.caller.plan
    price = unit_price(billable.caller, cached=billable.cached)
    return UsageCharge(
        request_id=billable.request_id,
        output_tokens=output_tokens,
        billed_tokens=billed_tokens,
        token_unit=plan.token_unit.value,
        price_per_1k_tokens_micros=price,
        cost_micros=cost_micros(billed_tokens, price),
        currency=plan.currency,
        audio_ms=billable.audio_ms,
    )


def _settlement(
    billable: BillableTranscription,
    charge: UsageCharge,
    from_state: str,
    now: datetime,
    *,
    min_tokens: int = 0,
) -> Closing:
    return Closing(
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


def release(session: Session, request_id: str, *, now: datetime | None = None) -> bool:
    """Give a failed request's reservation back; False when it was no longer open."""
    tenant_id = repository.tenant_of(session, request_id)
    if tenant_id is None:
        return False
    closing = Closing(
        request_id=request_id,
        tenant_id=tenant_id,
        from_state="open",
        to_state="released",
        closed_at=now or utcnow(),
    )
    # Under the account lock, the state change re-checks that it is still open.
    return repository.close(session, closing)


def expired_request_ids(session: Session, now: datetime, limit: int = 500) -> list[str]:
    statement = (
        select(Reservation.request_id)
        .where(Reservation.state == "open", col(Reservation.expires_at) < now)
        .order_by(col(Reservation.expires_at))
        .limit(limit)
    )
    return list(session.exec(statement).all())

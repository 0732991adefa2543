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

from sqlmodel import Session, col, select

from billing.accounts.repository import lock_account, period_for_update
from billing.errors import InsufficientQuota, NotFound
from billing.keys.schemas import AuthenticatedKey
from billing.models import Reservation, TenantAccount, TenantPeriod, UsageEvent
from billing.models.types import utcnow
from billing.money import cost_micros, format_micros
from billing.periods import billing_period
from billing.tokens import count_tokens
from billing.usage import repository as usage_repository
from billing.usage.schemas import BillableTranscription, UsageCharge
from billing.usage.service import charge_for


def token_bound(audio_ms: int, max_tokens_per_audio_second: int) -> int:
    return math.ceil(audio_ms * max_tokens_per_audio_second / 1000)


def reserve(
    session: Session,
    request_id: str,
    caller: AuthenticatedKey,
    audio_ms: int,
    *,
    ttl: timedelta,
    now: datetime | None = None,
) -> Reservation:
    """Hold the worst-case cost of a request, or raise ``InsufficientQuota``."""
    now = now or utcnow()
    plan = caller.plan
    tokens = token_bound(audio_ms, plan.max_tokens_per_audio_second)
    amount = cost_micros(tokens, plan.price_per_1k_tokens_micros)
    period = billing_period(now)
    account = lock_account(session, caller.tenant_id)
    if caller.prepaid and account.available_micros < amount:
        raise InsufficientQuota(
            f"This request may cost up to {format_micros(amount, plan.currency)} and the "
            f"remaining credit is {format_micros(max(account.available_micros, 0), plan.currency)}."
            " Top up the account to continue."
        )
    counters = period_for_update(session, caller.tenant_id, period)
    quota = plan.monthly_token_quota
    if quota is not None and counters.tokens_used + counters.tokens_reserved + tokens > quota:
        left = max(quota - counters.tokens_used - counters.tokens_reserved, 0)
        raise InsufficientQuota(
            f"This request may produce up to {tokens} tokens and {left} of the monthly quota of "
            f"{quota} are left for {period}."
        )
    reservation = Reservation(
        request_id=request_id,
        tenant_id=caller.tenant_id,
        api_key_id=caller.key_id,
        period=period,
        amount_micros=amount,
        tokens=tokens,
        state="open",
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(reservation)
    account.reserved_micros += amount
    account.updated_at = now
    counters.tokens_reserved += tokens
    session.add_all([account, counters])
    session.flush()
    return reservation


def _close(
    session: Session,
    reservation: Reservation,
    account: TenantAccount,
    counters: TenantPeriod,
    state: str,
    now: datetime,
) -> None:
    """Give back what an open reservation holds (the caller holds the account lock)."""
    if reservation.state == "open":
        account.reserved_micros -= reservation.amount_micros
        counters.tokens_reserved -= reservation.tokens
    reservation.state = state
    reservation.closed_at = now
    account.updated_at = now
    session.add_all([account, counters, reservation])


def _reservation(session: Session, request_id: str) -> Reservation:
    reservation = session.get(Reservation, request_id)
    if reservation is None:
        raise NotFound(f"no reservation for request {request_id}")
    return reservation


def settle(
    session: Session, billable: BillableTranscription, *, now: datetime | None = None
) -> UsageCharge:
    """Write the request's one usage row at its actual cost and close its reservation.

    Settling twice returns the first charge; settling a reservation the sweeper already
    released still bills the finished transcript exactly once. The account lock, taken first,
    serializes every transition of this tenant's reservations.
    """
    now = now or utcnow()
    account = lock_account(session, billable.caller.tenant_id)
    reservation = _reservation(session, billable.request_id)
    if reservation.state == "settled":
        existing = usage_repository.get_usage_event(session, billable.request_id)
        assert existing is not None  # a settled reservation always has its row
        return charge_for(existing)
    plan = billable.caller.plan
    output_tokens = count_tokens(billable.transcript, plan.token_unit)
    billed_tokens = min(output_tokens, reservation.tokens)
    price = plan.price_per_1k_tokens_micros
    if billable.cached:
        price = price * plan.cache_hit_price_bp // 10_000
    event = UsageEvent(
        request_id=billable.request_id,
        tenant_id=billable.caller.tenant_id,
        api_key_id=billable.caller.key_id,
        model=billable.model,
        audio_ms=billable.audio_ms,
        output_tokens=output_tokens,
        billed_tokens=billed_tokens,
        token_unit=plan.token_unit.value,
        price_per_1k_tokens_micros=price,
        currency=plan.currency,
        cost_micros=cost_micros(billed_tokens, price),
        cached=billable.cached,
        created_at=now,
    )
    usage_repository.insert_usage_event(session, event)
    account.spent_micros += event.cost_micros
    counters = period_for_update(session, reservation.tenant_id, reservation.period)
    counters.tokens_used += billed_tokens
    _close(session, reservation, account, counters, "settled", now)
    session.flush()
    return charge_for(event)


def release(session: Session, request_id: str, *, now: datetime | None = None) -> bool:
    """Give a failed request's reservation back; False when it was no longer open."""
    found = session.get(Reservation, request_id)
    if found is None:
        return False
    account = lock_account(session, found.tenant_id)
    session.refresh(found)  # re-read under the lock: another replica may have closed it
    if found.state != "open":
        return False
    counters = period_for_update(session, found.tenant_id, found.period)
    _close(session, found, account, counters, "released", now or utcnow())
    session.flush()
    return True


def expired_request_ids(session: Session, now: datetime, limit: int = 500) -> list[str]:
    statement = (
        select(Reservation.request_id)
        .where(Reservation.state == "open", col(Reservation.expires_at) < now)
        .order_by(col(Reservation.expires_at))
        .limit(limit)
    )
    return list(session.exec(statement).all())

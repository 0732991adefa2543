"""Reconciliation of one month: every total the product keeps must equal the rows under it.

Checks, per tenant:
- ``returned``, both ways: each usage row of the month has the charge returned for it, equal in
  tokens and cost, or a result an Idempotency-Key replays (else: billed but never returned);
  and each charge returned in the month has its usage row (else: returned but never billed);
- ``invoice``: the month's invoice total equals its lines and the rows it holds;
- ``account``: spent = all usage costs, credit = all credit entries, reserved = open
  reservations;
- ``quota``: the month's used and reserved tokens equal its settled and open reservations
  (and the cache hits of the month, which are charged without one);
- ``stale reservations``: no reservation is still open longer than ``grace`` past its expiry
  (the sweeper releases them; one left means no gateway is sweeping);
- ``stuck keys``: no Idempotency-Key is in progress with a lease that lapsed longer than
  ``grace`` ago (a request accepted, never answered, never retried);
- ``credit covers spent + reserved`` (prepaid tenants): no hold or charge ever went past the
  credit;
- ``quota covers used + reserved`` (plans with a monthly quota): the month's tokens used and
  held stay within the plan's quota.

The returned charges are evidence written apart from the ledger row: by the gateway once a
response was built (its ``x-billing-*`` headers) or a stream's text was sent
(``billing.usage.returned``), and by a job's completion from the usage its reads show. A usage
row with none is a charge no client was told of, unless an Idempotency-Key or a completed job
still delivers its result on request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from billing.accounts.repository import get_period
from billing.models import (
    CreditEntry,
    IdempotencyRecord,
    Invoice,
    InvoiceItem,
    InvoiceLine,
    Job,
    Plan,
    Reservation,
    ReturnedCharge,
    Tenant,
    TenantAccount,
    UsageEvent,
)
from billing.models.types import utcnow
from billing.periods import period_bounds


@dataclass(frozen=True)
class Finding:
    tenant: str
    check: str
    expected: int
    actual: int
    detail: str

    @property
    def ok(self) -> bool:
        return self.expected == self.actual and not self.detail.startswith("mismatch")


def _sum(session: Session, column: Any, *conditions: Any) -> int:
    statement = sql_select(func.coalesce(func.sum(column), 0)).where(*conditions)
    return int(session.execute(statement).scalar_one())


# A reservation or lease lapsed for longer than this counts as stale: the sweeper runs every
# GATEWAY_RESERVATION_SWEEP_SECONDS (30 s), and a client retries a key within minutes.
DEFAULT_GRACE = timedelta(minutes=5)


def reconcile(
    session: Session,
    period: str,
    *,
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
) -> list[Finding]:
    start, end = period_bounds(period)
    stale_before = (now or utcnow()) - grace
    findings: list[Finding] = []
    for tenant in session.exec(select(Tenant).order_by(col(Tenant.name))).all():
        assert tenant.id is not None
        findings += _returned(session, tenant, start, end)
        findings += _invoice(session, tenant, period)
        findings += _account(session, tenant)
        findings += _quota(session, tenant, period)
        findings += _limits(session, tenant, period)
        findings += _stale(session, tenant, stale_before)
    return findings


def _returned(session: Session, tenant: Tenant, start: datetime, end: datetime) -> list[Finding]:
    replayable = select(IdempotencyRecord.request_id).where(  # type: ignore[call-overload]
        IdempotencyRecord.tenant_id == tenant.id,
        IdempotencyRecord.state == "completed",
        col(IdempotencyRecord.result).is_not(None),
    )
    fetchable_jobs = select(Job.id).where(  # type: ignore[call-overload]
        Job.tenant_id == tenant.id, Job.state == "completed", col(Job.result).is_not(None)
    )
    rows = session.exec(
        select(
            UsageEvent,
            ReturnedCharge,
            col(UsageEvent.request_id).in_(replayable)
            | col(UsageEvent.request_id).in_(fetchable_jobs),
        )
        .outerjoin(ReturnedCharge, col(ReturnedCharge.request_id) == col(UsageEvent.request_id))
        .where(
            UsageEvent.tenant_id == tenant.id,
            col(UsageEvent.created_at) >= start,
            col(UsageEvent.created_at) < end,
        )
    ).all()
    ledger = sum(event.cost_micros for event, _, _ in rows)
    returned = sum(charge.cost_micros for _, charge, _ in rows if charge is not None)
    # A settled result a retry (or a job's reader) can still fetch is delivered on request.
    replay_only = sum(
        event.cost_micros for event, charge, can_replay in rows if charge is None and can_replay
    )
    missing = [
        event.request_id for event, charge, can_replay in rows if charge is None and not can_replay
    ]
    different = [
        event.request_id
        for event, charge, _ in rows
        if charge is not None
        and (charge.cost_micros, charge.billed_tokens) != (event.cost_micros, event.billed_tokens)
    ]
    unbilled = session.exec(
        select(ReturnedCharge)
        .outerjoin(UsageEvent, col(UsageEvent.request_id) == col(ReturnedCharge.request_id))
        .where(
            ReturnedCharge.tenant_id == tenant.id,
            col(ReturnedCharge.created_at) >= start,
            col(ReturnedCharge.created_at) < end,
            col(UsageEvent.id).is_(None),
        )
    ).all()
    problems = []
    if missing:
        problems.append(f"{len(missing)} billed but never returned ({', '.join(missing[:3])})")
    if different:
        problems.append(
            f"{len(different)} returned with other numbers ({', '.join(different[:3])})"
        )
    if unbilled:
        ids = ", ".join(charge.request_id for charge in unbilled[:3])
        problems.append(f"{len(unbilled)} returned but never billed ({ids})")
    detail = ("mismatch: " + "; ".join(problems)) if problems else f"{len(rows)} rows"
    told = returned + replay_only + sum(charge.cost_micros for charge in unbilled)
    return [Finding(tenant.name, "returned", ledger, told, detail)]


def _stale(session: Session, tenant: Tenant, before: datetime) -> list[Finding]:
    reservations = session.exec(
        select(Reservation.request_id).where(  # type: ignore[call-overload]
            Reservation.tenant_id == tenant.id,
            Reservation.state == "open",
            col(Reservation.expires_at) < before,
        )
    ).all()
    keys = session.exec(
        select(IdempotencyRecord.key).where(  # type: ignore[call-overload]
            IdempotencyRecord.tenant_id == tenant.id,
            IdempotencyRecord.state == "in_progress",
            col(IdempotencyRecord.lease_expires_at) < before,
        )
    ).all()

    def finding(check: str, stale: list[str], what: str) -> Finding:
        detail = f"mismatch: {len(stale)} {what} ({', '.join(stale[:3])})" if stale else ""
        return Finding(tenant.name, check, 0, len(stale), detail)

    return [
        finding("stale reservations", list(reservations), "open past their expiry"),
        finding("stuck keys", list(keys), "keys in progress with a long-lapsed lease"),
    ]


def _invoice(session: Session, tenant: Tenant, period: str) -> list[Finding]:
    invoice = session.exec(
        select(Invoice).where(Invoice.tenant_id == tenant.id, Invoice.period == period)
    ).first()
    if invoice is None:
        return []
    lines = _sum(session, InvoiceLine.amount_micros, InvoiceLine.invoice_id == invoice.id)
    held = _sum(
        session,
        UsageEvent.cost_micros,
        col(UsageEvent.id).in_(
            select(InvoiceItem.usage_event_id).where(InvoiceItem.invoice_id == invoice.id)
        ),
    )
    findings = [
        Finding(tenant.name, f"invoice {invoice.state} = lines", invoice.total_micros, lines, ""),
        Finding(tenant.name, "invoice lines = ledger rows", lines, held, ""),
    ]
    return findings


def _account(session: Session, tenant: Tenant) -> list[Finding]:
    account = session.get(TenantAccount, tenant.id)
    if account is None:
        return [Finding(tenant.name, "account", 0, 0, "mismatch: the tenant has no account row")]
    spent = _sum(session, UsageEvent.cost_micros, UsageEvent.tenant_id == tenant.id)
    credit = _sum(session, CreditEntry.amount_micros, CreditEntry.tenant_id == tenant.id)
    reserved = _sum(
        session,
        Reservation.amount_micros,
        Reservation.tenant_id == tenant.id,
        Reservation.state == "open",
    )
    return [
        Finding(tenant.name, "account spent", spent, account.spent_micros, ""),
        Finding(tenant.name, "account credit", credit, account.credit_micros, ""),
        Finding(tenant.name, "account reserved", reserved, account.reserved_micros, ""),
    ]


def _quota(session: Session, tenant: Tenant, period: str) -> list[Finding]:
    assert tenant.id is not None
    counters = get_period(session, tenant.id, period)
    used = _sum(
        session,
        UsageEvent.billed_tokens,
        col(UsageEvent.request_id).in_(
            select(Reservation.request_id).where(
                Reservation.tenant_id == tenant.id, Reservation.period == period
            )
        ),
    )
    # Cache hits are charged without a reservation, in the month they were answered.
    start, end = period_bounds(period)
    used += _sum(
        session,
        UsageEvent.billed_tokens,
        UsageEvent.tenant_id == tenant.id,
        col(UsageEvent.created_at) >= start,
        col(UsageEvent.created_at) < end,
        col(UsageEvent.request_id).not_in(select(Reservation.request_id)),
    )
    reserved = _sum(
        session,
        Reservation.tokens,
        Reservation.tenant_id == tenant.id,
        Reservation.period == period,
        Reservation.state == "open",
    )
    return [
        Finding(tenant.name, "quota used", used, counters.tokens_used if counters else 0, ""),
        Finding(
            tenant.name, "quota reserved", reserved, counters.tokens_reserved if counters else 0, ""
        ),
    ]


def _limits(session: Session, tenant: Tenant, period: str) -> list[Finding]:
    """The limits every hold and charge is checked against, checked again on the totals: a
    prepaid tenant's credit covers what it spent and holds, and the month's tokens used and held
    fit the plan's quota. Each finding's actual value is the overrun (0 when within)."""
    assert tenant.id is not None
    findings: list[Finding] = []
    account = session.get(TenantAccount, tenant.id)
    if tenant.prepaid and account is not None:
        committed = account.spent_micros + account.reserved_micros
        overrun = max(0, committed - account.credit_micros)
        detail = f"spent + reserved {committed} of credit {account.credit_micros}"
        findings.append(
            Finding(
                tenant.name,
                "credit covers spent + reserved",
                0,
                overrun,
                f"mismatch: {detail}" if overrun else detail,
            )
        )
    plan = session.get(Plan, tenant.plan_id)
    quota = plan.monthly_token_quota if plan is not None else None
    if quota is not None:
        counters = get_period(session, tenant.id, period)
        held = (counters.tokens_used + counters.tokens_reserved) if counters else 0
        overrun = max(0, held - quota)
        detail = f"used + reserved {held} of quota {quota} tokens"
        findings.append(
            Finding(
                tenant.name,
                "quota covers used + reserved",
                0,
                overrun,
                f"mismatch: {detail}" if overrun else detail,
            )
        )
    return findings

"""Reconciliation of one month: every total the product keeps must equal the rows under it.

Checks, per tenant:
- ``returned``: each usage row of the month has the charge the gateway returned for it, equal
  in tokens and cost (and no returned charge lacks its row);
- ``invoice``: the month's invoice total equals its lines and the rows it holds;
- ``account``: spent = all usage costs, credit = all credit entries, reserved = open
  reservations;
- ``quota``: the month's used and reserved tokens equal its settled and open reservations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from billing.accounts.repository import get_period
from billing.models import (
    CreditEntry,
    Invoice,
    InvoiceItem,
    InvoiceLine,
    Reservation,
    ReturnedCharge,
    Tenant,
    TenantAccount,
    UsageEvent,
)
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


def reconcile(session: Session, period: str) -> list[Finding]:
    start, end = period_bounds(period)
    findings: list[Finding] = []
    for tenant in session.exec(select(Tenant).order_by(col(Tenant.name))).all():
        assert tenant.id is not None
        findings += _returned(session, tenant, start, end)
        findings += _invoice(session, tenant, period)
        findings += _account(session, tenant)
        findings += _quota(session, tenant, period)
    return findings


def _returned(session: Session, tenant: Tenant, start: object, end: object) -> list[Finding]:
    rows = session.exec(
        select(UsageEvent, ReturnedCharge)
        .outerjoin(ReturnedCharge, col(ReturnedCharge.request_id) == col(UsageEvent.request_id))
        .where(
            UsageEvent.tenant_id == tenant.id,
            col(UsageEvent.created_at) >= start,
            col(UsageEvent.created_at) < end,
        )
    ).all()
    ledger = sum(event.cost_micros for event, _ in rows)
    returned = sum(charge.cost_micros for _, charge in rows if charge is not None)
    missing = [event.request_id for event, charge in rows if charge is None]
    different = [
        event.request_id
        for event, charge in rows
        if charge is not None
        and (charge.cost_micros, charge.billed_tokens) != (event.cost_micros, event.billed_tokens)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} billed but never returned ({', '.join(missing[:3])})")
    if different:
        problems.append(
            f"{len(different)} returned with other numbers ({', '.join(different[:3])})"
        )
    detail = ("mismatch: " + "; ".join(problems)) if problems else f"{len(rows)} rows"
    return [Finding(tenant.name, "returned", ledger, returned, detail)]


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

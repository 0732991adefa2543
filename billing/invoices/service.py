"""Monthly invoices: drafts rebuilt from the ledger, finalized ones frozen.

Each usage row is billed on exactly one invoice (``invoice_items``). A draft for a month takes
every row of the tenant dated before the month's end that no finalized invoice holds: rows of
the month become usage lines, rows dated in an earlier month that was already finalized (a late
settlement, a correction) become adjustment lines, since a finalized month never changes.
Lines group rows by model and API key. The total is the integer sum of the rows' costs, each
rounded once when it was billed (billing.money): no rounding happens on the invoice.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import delete
from sqlmodel import Session, col, select

from billing.audit import service as audit
from billing.audit.schemas import Actor
from billing.errors import Conflict, InvalidValue, NotFound
from billing.invoices.schemas import InvoicePublic, InvoiceSummary
from billing.models import ApiKey, Invoice, InvoiceItem, InvoiceLine, Tenant, UsageEvent
from billing.models.types import utcnow
from billing.periods import billing_period, period_bounds
from billing.plans.repository import get_plan
from billing.tenants.service import require_tenant


def _adjusts_into(states: dict[str, str], month: str, period: str) -> bool:
    """A row dated in an earlier ``month`` lands on ``period``'s draft when its own month is
    finalized and no draft lies in between to take it first."""
    if states.get(month) != "finalized":
        return False
    return not any(month < other < period and state == "draft" for other, state in states.items())


def _lock_invoice(session: Session, tenant_id: int, period: str, currency: str) -> Invoice:
    invoice = session.exec(
        select(Invoice)
        .where(Invoice.tenant_id == tenant_id, Invoice.period == period)
        .with_for_update()
    ).first()
    if invoice is None:
        invoice = Invoice(tenant_id=tenant_id, period=period, currency=currency, state="draft")
        session.add(invoice)
        session.flush()
    return invoice


def _summary(invoice: Invoice, tenant_name: str) -> InvoiceSummary:
    return InvoiceSummary(
        tenant=tenant_name,
        period=invoice.period,
        state=invoice.state,
        currency=invoice.currency,
        total_micros=invoice.total_micros,
    )


def build_draft(session: Session, tenant_name: str, period: str, *, actor: Actor) -> Invoice:
    """The month's invoice, rebuilt from the ledger while it is a draft."""
    invoice = _rebuild(session, tenant_name, period)
    audit.record(
        session,
        actor,
        "invoice.draft",
        "invoice",
        f"{tenant_name}/{period}",
        after=_summary(invoice, tenant_name),
    )
    return invoice


def _rebuild(session: Session, tenant_name: str, period: str) -> Invoice:
    start, end = period_bounds(period)
    tenant = require_tenant(session, tenant_name)
    assert tenant.id is not None
    plan = get_plan(session, tenant.plan_id)
    assert plan is not None
    invoice = _lock_invoice(session, tenant.id, period, plan.currency)
    if invoice.state == "finalized":
        raise Conflict(f"the invoice of {tenant_name} for {period} is finalized and cannot change")
    assert invoice.id is not None
    session.execute(delete(InvoiceItem).where(col(InvoiceItem.invoice_id) == invoice.id))
    session.execute(delete(InvoiceLine).where(col(InvoiceLine.invoice_id) == invoice.id))
    finalized_items = (
        select(InvoiceItem.usage_event_id)
        .join(Invoice, col(Invoice.id) == col(InvoiceItem.invoice_id))
        .where(Invoice.state == "finalized")
    )
    states = {
        other.period: other.state
        for other in session.exec(select(Invoice).where(Invoice.tenant_id == tenant.id)).all()
    }
    candidates = session.exec(
        select(UsageEvent, ApiKey.prefix)
        .join(ApiKey, col(ApiKey.id) == col(UsageEvent.api_key_id))
        .where(
            UsageEvent.tenant_id == tenant.id,
            col(UsageEvent.created_at) < end,
            col(UsageEvent.id).not_in(finalized_items),
        )
        .order_by(col(UsageEvent.id))
    ).all()
    rows = [
        (event, prefix)
        for event, prefix in candidates
        if event.created_at >= start
        or _adjusts_into(states, billing_period(event.created_at), period)
    ]
    lines: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for event, prefix in rows:
        if event.currency != invoice.currency:
            raise InvalidValue(
                f"usage row {event.request_id} is in {event.currency}, the invoice in "
                f"{invoice.currency}"
            )
        kind = "usage" if event.created_at >= start else "adjustment"
        totals = lines[(kind, event.model, prefix)]
        totals[0] += 1
        totals[1] += event.billed_tokens
        totals[2] += event.cost_micros
        assert event.id is not None
        session.add(InvoiceItem(usage_event_id=event.id, invoice_id=invoice.id))
    for (kind, model, prefix), (requests, tokens, amount) in sorted(lines.items()):
        session.add(
            InvoiceLine(
                invoice_id=invoice.id,
                kind=kind,
                model=model,
                api_key_prefix=prefix,
                requests=requests,
                billed_tokens=tokens,
                amount_micros=amount,
            )
        )
    invoice.total_micros = sum(amount for _, _, amount in lines.values())
    session.add(invoice)
    session.flush()
    return invoice


def finalize(session: Session, tenant_name: str, period: str, *, actor: Actor) -> Invoice:
    """Rebuild the draft one last time and freeze it."""
    invoice = _rebuild(session, tenant_name, period)
    before = _summary(invoice, tenant_name)
    invoice.state = "finalized"
    invoice.finalized_at = utcnow()
    session.add(invoice)
    session.flush()
    audit.record(
        session,
        actor,
        "invoice.finalize",
        "invoice",
        f"{tenant_name}/{period}",
        before=before,
        after=_summary(invoice, tenant_name),
    )
    return invoice


def invoice_lines(
    session: Session, tenant_name: str, period: str
) -> tuple[Invoice, list[InvoiceLine]]:
    tenant = require_tenant(session, tenant_name)
    invoice = session.exec(
        select(Invoice).where(Invoice.tenant_id == tenant.id, Invoice.period == period)
    ).first()
    if invoice is None:
        raise NotFound(f"no invoice for {tenant_name} in {period}; build a draft first")
    lines = session.exec(
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id == invoice.id)
        .order_by(col(InvoiceLine.kind), col(InvoiceLine.model), col(InvoiceLine.api_key_prefix))
    ).all()
    return invoice, list(lines)


def show_invoice(session: Session, tenant_name: str, period: str) -> InvoicePublic:
    invoice, lines = invoice_lines(session, tenant_name, period)
    return InvoicePublic.of(invoice, tenant_name, lines)


def list_invoices(
    session: Session, tenant_name: str | None = None, period: str | None = None
) -> list[InvoiceSummary]:
    statement = select(Invoice, Tenant.name).join(Tenant, col(Tenant.id) == col(Invoice.tenant_id))
    if tenant_name is not None:
        statement = statement.where(Tenant.name == tenant_name)
    if period is not None:
        statement = statement.where(Invoice.period == period)
    rows = session.exec(statement.order_by(col(Invoice.period), col(Tenant.name))).all()
    return [_summary(invoice, name) for invoice, name in rows]

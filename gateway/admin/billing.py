"""Admin: usage reports, invoices and reconciliation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from sqlmodel import Session

from billing.invoices.schemas import InvoicePublic, InvoiceSummary
from billing.invoices.service import build_draft, finalize, list_invoices, show_invoice
from billing.periods import PERIOD_PATTERN
from billing.reconcile.service import reconcile
from billing.reports.schemas import ReportRow
from billing.reports.service import parse_group_by, report_csv, usage_report
from gateway.admin.auth import BillingRead, BillingWrite, UsageRead
from gateway.admin.deps import Period, PeriodFilter, TenantFilter, TenantName, in_transaction
from gateway.admin.schemas import FindingPublic, ReconcileReport
from gateway.deps import DatabaseDep, RequestId
from gateway.openapi import error_responses, text_content

router = APIRouter(prefix="/admin", tags=["admin: billing"], responses=error_responses(404, 409))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@router.get(
    "/reports/usage",
    response_model=list[ReportRow],
    responses={
        200: {
            "description": "JSON rows, or CSV with format=csv.",
            "content": text_content("text/csv"),
        }
    },
)
def usage(
    database: DatabaseDep,
    _claims: UsageRead,
    start: Annotated[date, Query(alias="from", description="First day (UTC), 2026-11-01.")],
    end: Annotated[date, Query(alias="to", description="Day after the last (UTC).")],
    group_by: Annotated[
        str,
        Query(
            max_length=64,
            description="Comma-separated: tenant, key, model, day, month.",
            examples=["tenant,model"],
        ),
    ] = "tenant",
    format: Literal["json", "csv"] = "json",
    tenant: TenantFilter = None,
) -> list[ReportRow] | PlainTextResponse:
    """Usage between two days grouped by tenant, key, model, day and/or month (comma-separated),
    as JSON or CSV; costs in integer micro-units."""
    groups = parse_group_by(group_by)
    rows = in_transaction(
        database,
        lambda session: usage_report(session, _midnight(start), _midnight(end), groups, tenant),
    )
    if format == "csv":
        filename = f"usage-{start.isoformat()}-{end.isoformat()}.csv"
        return PlainTextResponse(
            report_csv(rows, groups),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return rows


@router.get("/invoices")
def invoices(
    database: DatabaseDep,
    _claims: BillingRead,
    tenant: TenantFilter = None,
    period: PeriodFilter = None,
) -> list[InvoiceSummary]:
    """Invoices, optionally of one tenant or one month."""
    return in_transaction(database, lambda session: list_invoices(session, tenant, period))


@router.get("/invoices/{tenant}/{period}")
def invoice(
    tenant: TenantName, period: Period, database: DatabaseDep, _claims: BillingRead
) -> InvoicePublic:
    """One invoice with its lines."""
    return in_transaction(database, lambda session: show_invoice(session, tenant, period))


@router.post("/invoices/{tenant}/{period}/draft")
def draft(
    tenant: TenantName,
    period: Period,
    database: DatabaseDep,
    claims: BillingWrite,
    request_id: RequestId,
) -> InvoicePublic:
    """Build (or rebuild) the month's draft from the ledger; 409 once it is finalized."""
    actor = claims.actor(request_id)

    def act(session: Session) -> InvoicePublic:
        build_draft(session, tenant, period, actor=actor)
        return show_invoice(session, tenant, period)

    return in_transaction(database, act)


@router.post("/invoices/{tenant}/{period}/finalize")
def finalize_invoice(
    tenant: TenantName,
    period: Period,
    database: DatabaseDep,
    claims: BillingWrite,
    request_id: RequestId,
) -> InvoicePublic:
    """Rebuild the draft one last time and freeze it; a finalized invoice never changes."""
    actor = claims.actor(request_id)

    def act(session: Session) -> InvoicePublic:
        finalize(session, tenant, period, actor=actor)
        return show_invoice(session, tenant, period)

    return in_transaction(database, act)


@router.get("/reconcile")
def reconcile_period(
    database: DatabaseDep,
    _claims: BillingRead,
    period: Annotated[str, Query(pattern=PERIOD_PATTERN, examples=["2026-11"])],
) -> ReconcileReport:
    """Check that ledger rows, invoices, account totals and what clients were told agree."""
    findings = in_transaction(database, lambda session: reconcile(session, period))
    return ReconcileReport(
        period=period,
        ok=all(finding.ok for finding in findings),
        findings=[FindingPublic.of(finding) for finding in findings],
    )

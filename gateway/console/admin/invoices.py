"""Console: invoices (draft, finalize, PDF and CSV)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from billing.db import Database
from billing.invoices.service import build_draft, finalize, list_invoices, show_invoice
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.tenants import repository as tenants_repository
from gateway.admin.deps import in_transaction
from gateway.console.deps import BillingPage, BillingWrite
from gateway.console.downloads import invoice_csv_response, invoice_pdf_response
from gateway.console.sessions.schemas import ConsoleCaller
from gateway.console.views import render
from gateway.deps import DatabaseDep, RequestId

router = APIRouter(prefix="/console/invoices", tags=["console"], include_in_schema=False)


def invoice_path(tenant: str, period: str, notice: str | None = None) -> str:
    path = f"/console/invoices/{quote(tenant)}/{quote(period)}"
    return f"{path}?notice={notice}" if notice else path


@router.get("")
def invoices(
    request: Request,
    database: DatabaseDep,
    caller: BillingPage,
    tenant: str = "",
    period: str = "",
) -> Response:
    """Invoices, filtered by tenant and month; a form to draft one."""

    def load(session: Session) -> dict[str, object]:
        return {
            "invoices": list_invoices(session, tenant or None, period or None),
            "tenants": [found.name for found in tenants_repository.list_tenants(session)],
        }

    context = in_transaction(database, load)
    return render(
        request,
        "admin/invoices.html",
        {
            **context,
            "tenant": tenant,
            "period": period,
            "this_period": billing_period(utcnow()),
            "can": {scope.value for scope in caller.scopes},
        },
    )


def _draft(
    database: Database, caller: ConsoleCaller, request_id: str, tenant: str, period: str
) -> Response:
    actor = caller.actor(request_id)
    in_transaction(database, lambda session: build_draft(session, tenant, period, actor=actor))
    return RedirectResponse(invoice_path(tenant, period, "invoice-drafted"), status_code=303)


@router.post("")
def draft_form(
    database: DatabaseDep,
    caller: BillingWrite,
    request_id: RequestId,
    tenant: Annotated[str, Form()],
    period: Annotated[str, Form()],
) -> Response:
    """Build (or rebuild) a month's draft from the ledger."""
    return _draft(database, caller, request_id, tenant, period)


@router.get("/{tenant}/{period}")
def invoice(
    request: Request, tenant: str, period: str, database: DatabaseDep, caller: BillingPage
) -> Response:
    """One invoice with its lines."""
    found = in_transaction(database, lambda session: show_invoice(session, tenant, period))
    return render(
        request,
        "admin/invoice.html",
        {"invoice": found, "can": {scope.value for scope in caller.scopes}},
    )


@router.post("/{tenant}/{period}/draft")
def redraft(
    tenant: str, period: str, database: DatabaseDep, caller: BillingWrite, request_id: RequestId
) -> Response:
    """Rebuild the draft from the ledger; 409 once finalized."""
    return _draft(database, caller, request_id, tenant, period)


@router.post("/{tenant}/{period}/finalize")
def finalize_form(
    tenant: str, period: str, database: DatabaseDep, caller: BillingWrite, request_id: RequestId
) -> Response:
    """Freeze the invoice; it never changes again."""
    actor = caller.actor(request_id)
    in_transaction(database, lambda session: finalize(session, tenant, period, actor=actor))
    return RedirectResponse(invoice_path(tenant, period, "invoice-finalized"), status_code=303)


@router.get("/{tenant}/{period}/pdf")
def invoice_pdf(tenant: str, period: str, database: DatabaseDep, _caller: BillingPage) -> Response:
    """The invoice as a PDF, equal line by line to its JSON."""
    found = in_transaction(database, lambda session: show_invoice(session, tenant, period))
    return invoice_pdf_response(found)


@router.get("/{tenant}/{period}/csv")
def invoice_csv(tenant: str, period: str, database: DatabaseDep, _caller: BillingPage) -> Response:
    """The invoice's lines and total as CSV."""
    found = in_transaction(database, lambda session: show_invoice(session, tenant, period))
    return invoice_csv_response(found)

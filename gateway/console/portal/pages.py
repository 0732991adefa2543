"""The customer portal: usage, API keys and invoices of the signed-in tenant, and nothing else.

Every query here is filtered by the session's tenant. A probe with another tenant's key prefix
or invoice month answers 404, exactly as for one that does not exist.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from billing.errors import InvalidValue, NotFound
from billing.invoices.schemas import InvoicePublic
from billing.invoices.service import list_invoices, show_invoice
from billing.keys.schemas import ApiKeyPublic, KeyScope
from billing.keys.service import create_api_key, list_api_keys, revoke_api_key
from billing.models.types import utcnow
from billing.reports.schemas import GroupBy
from billing.reports.service import report_csv
from billing.tenants.service import tenant_detail
from gateway.admin.deps import in_transaction
from gateway.console.deps import PortalPage, PortalWrite
from gateway.console.downloads import attachment, invoice_pdf_response
from gateway.console.reauth import RecentlyAuthenticated
from gateway.console.sessions.schemas import ConsoleCaller
from gateway.console.usage import daily_usage, month_start, usage_by_day_and_model
from gateway.console.views import render
from gateway.deps import DatabaseDep, KeyCacheDep, RequestId

router = APIRouter(prefix="/console/portal", tags=["console: portal"], include_in_schema=False)
LONGEST_RANGE = timedelta(days=366)


def tenant_of(caller: ConsoleCaller) -> str:
    assert caller.tenant_name is not None
    return caller.tenant_name


def usage_range(start: str, end: str) -> tuple[date, date]:
    """``from`` and ``to`` (exclusive) as days; this month so far when not given."""
    today = utcnow().date()
    try:
        first = date.fromisoformat(start) if start else month_start(today)
        last = date.fromisoformat(end) if end else today + timedelta(days=1)
    except ValueError:
        raise InvalidValue("days are written like 2026-11-01") from None
    if last <= first:
        raise InvalidValue("the range must end after it starts")
    if last - first > LONGEST_RANGE:
        raise InvalidValue("a range spans at most 366 days")
    return first, last


def own_key(session: Session, tenant: str, prefix: str) -> ApiKeyPublic:
    for key in list_api_keys(session, tenant):
        if key.prefix == prefix:
            return key
    raise NotFound(f"no API key with prefix {prefix!r}")


def finalized_invoice(session: Session, tenant: str, period: str) -> InvoicePublic:
    """Customers see invoices once finalized: a draft may still change."""
    invoice = show_invoice(session, tenant, period)
    if invoice.state != "finalized":
        raise NotFound(f"no invoice for {period}")
    return invoice


@router.get("")
def portal_home(request: Request, database: DatabaseDep, caller: PortalPage) -> Response:
    """Credit balance and this month's usage at a glance."""
    tenant = tenant_of(caller)
    today = utcnow().date()

    def load(session: Session) -> dict[str, object]:
        return {
            "detail": tenant_detail(session, tenant),
            "usage": daily_usage(session, month_start(today), today + timedelta(days=1), tenant),
        }

    return render(request, "portal/home.html", in_transaction(database, load))


@router.get("/usage")
def usage(
    request: Request,
    database: DatabaseDep,
    caller: PortalPage,
) -> Response:
    """Usage per day (chart) and per day and model (table) over a range of days (``from``,
    ``to`` exclusive; this month so far by default)."""
    tenant = tenant_of(caller)
    first, last = usage_range(
        request.query_params.get("from", ""), request.query_params.get("to", "")
    )

    def load(session: Session) -> dict[str, object]:
        return {
            "daily": daily_usage(session, first, last, tenant),
            "rows": usage_by_day_and_model(session, first, last, tenant),
        }

    context = in_transaction(database, load)
    return render(
        request,
        "portal/usage.html",
        {**context, "first": first.isoformat(), "last": last.isoformat()},
    )


@router.get("/usage.csv")
def usage_csv(request: Request, database: DatabaseDep, caller: PortalPage) -> Response:
    """The same table as CSV (integer micro-unit costs)."""
    tenant = tenant_of(caller)
    first, last = usage_range(
        request.query_params.get("from", ""), request.query_params.get("to", "")
    )
    rows = in_transaction(
        database, lambda session: usage_by_day_and_model(session, first, last, tenant)
    )
    text = report_csv(rows, [GroupBy.day, GroupBy.model])
    return attachment(text, "text/csv; charset=utf-8", f"usage-{first}-{last}.csv")


@router.get("/keys")
def keys(request: Request, database: DatabaseDep, caller: PortalPage) -> Response:
    """The tenant's API keys (never their secrets)."""
    tenant = tenant_of(caller)
    found = in_transaction(database, lambda session: list_api_keys(session, tenant))
    return render(request, "portal/keys.html", {"keys": found, "key_scopes": list(KeyScope)})


@router.post("/keys")
def create_key(
    request: Request,
    database: DatabaseDep,
    caller: PortalWrite,
    request_id: RequestId,
    _recent: RecentlyAuthenticated,
    key_name: Annotated[str, Form(min_length=1, max_length=128)] = "default",
    scopes: Annotated[list[KeyScope] | None, Form()] = None,
    expires_in_days: Annotated[int | None, Form(gt=0)] = None,
) -> Response:
    """Create a key for this tenant; the secret is shown on the answer page only."""
    tenant = tenant_of(caller)
    actor = caller.actor(request_id)
    created = in_transaction(
        database,
        lambda session: create_api_key(
            session,
            tenant,
            name=key_name,
            scopes=scopes or None,
            expires_in=timedelta(days=expires_in_days) if expires_in_days else None,
            actor=actor,
        ),
    )
    return render(
        request,
        "key_created.html",
        {"created": created, "back": "/console/portal/keys", "rotated": None},
    )


@router.post("/keys/{prefix}/revoke")
def revoke_key(
    prefix: str,
    database: DatabaseDep,
    key_cache: KeyCacheDep,
    caller: PortalWrite,
    request_id: RequestId,
) -> Response:
    """Revoke one of this tenant's keys; another tenant's prefix is 404."""
    tenant = tenant_of(caller)
    actor = caller.actor(request_id)

    def act(session: Session) -> ApiKeyPublic:
        key = own_key(session, tenant, prefix)
        return revoke_api_key(session, key.prefix, actor=actor)

    revoked = in_transaction(database, act)
    key_cache.evict(revoked.prefix)
    return RedirectResponse("/console/portal/keys?notice=key-revoked", status_code=303)


@router.get("/invoices")
def invoices(request: Request, database: DatabaseDep, caller: PortalPage) -> Response:
    """The tenant's finalized invoices."""
    tenant = tenant_of(caller)
    found = in_transaction(database, lambda session: list_invoices(session, tenant))
    return render(
        request,
        "portal/invoices.html",
        {"invoices": [invoice for invoice in found if invoice.state == "finalized"]},
    )


@router.get("/invoices/{period}")
def invoice(request: Request, period: str, database: DatabaseDep, caller: PortalPage) -> Response:
    """One finalized invoice with its lines."""
    tenant = tenant_of(caller)
    found = in_transaction(database, lambda session: finalized_invoice(session, tenant, period))
    return render(request, "portal/invoice.html", {"invoice": found})


@router.get("/invoices/{period}/pdf")
def invoice_pdf(period: str, database: DatabaseDep, caller: PortalPage) -> Response:
    """One finalized invoice as a PDF."""
    tenant = tenant_of(caller)
    found = in_transaction(database, lambda session: finalized_invoice(session, tenant, period))
    return invoice_pdf_response(found)

"""Console: the overview, tenants (credit, keys, portal links) and plans."""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from billing.credits.service import add_credit, list_credit_entries
from billing.errors import InvalidValue
from billing.invoices.service import list_invoices
from billing.keys.schemas import KeyScope
from billing.keys.service import create_api_key, list_api_keys, revoke_api_key, rotate_api_key
from billing.models.types import utcnow
from billing.money import MICROS_PER_UNIT
from billing.plans import repository as plans_repository
from billing.plans.schemas import PlanPublic
from billing.plans.service import create_plan
from billing.tenants import repository as tenants_repository
from billing.tenants.service import create_tenant, describe_tenant, tenant_detail
from billing.tokens import TokenUnit
from gateway.admin.deps import in_transaction
from gateway.admin.scopes import Data, may_read
from gateway.console.deps import (
    CreditWrite,
    KeysWrite,
    PlansPage,
    PlansWrite,
    PortalLinksWrite,
    TenantsPage,
    TenantsWrite,
    UsagePage,
)
from gateway.console.portal_links.service import create_portal_link, portal_link_lifetime
from gateway.console.reauth import RecentlyAuthenticated
from gateway.console.usage import daily_usage, month_start
from gateway.console.views import render
from gateway.deps import DatabaseDep, KeyCacheDep, RequestId, SettingsDep

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)
SEARCH_LIMIT = 200


def request_url(path: str, notice: str) -> str:
    return f"{quote(path)}?notice={notice}"


def parse_amount_micros(amount: str) -> int:
    """``"12.5"`` (units of the currency) → 12500000 micro-units, exactly; no floats."""
    try:
        value = Decimal(amount.strip()) * MICROS_PER_UNIT
    except InvalidOperation:
        raise InvalidValue(f"{amount!r} is not an amount like 12.50") from None
    if value != value.to_integral_value():
        raise InvalidValue("amounts have at most 6 decimals (micro-units)")
    return int(value)


@router.get("")
def overview(request: Request, database: DatabaseDep, _caller: UsagePage) -> Response:
    """Today and this month: requests, audio hours, output tokens, revenue; a chart per day."""
    today = utcnow().date()
    month = in_transaction(
        database,
        lambda session: daily_usage(session, month_start(today), today + timedelta(days=1)),
    )
    today_totals = month.days[-1][1]
    return render(
        request, "admin/overview.html", {"month": month, "today": today_totals, "day": today}
    )


@router.get("/tenants")
def tenants(request: Request, database: DatabaseDep, _caller: TenantsPage, q: str = "") -> Response:
    """Tenants, searched by name."""

    def load(session: Session) -> tuple[list[object], list[PlanPublic]]:
        found = tenants_repository.search_tenants(session, q.strip(), SEARCH_LIMIT)
        rows: list[object] = [tenant_detail(session, tenant.name) for tenant in found]
        plans = [PlanPublic.of(plan) for plan in plans_repository.list_plans(session)]
        return rows, plans

    rows, plans = in_transaction(database, load)
    return render(
        request,
        "admin/tenants.html",
        {"tenants": rows, "plans": plans, "q": q, "limit": SEARCH_LIMIT},
    )


@router.post("/tenants")
def create_tenant_form(
    database: DatabaseDep,
    caller: TenantsWrite,
    request_id: RequestId,
    name: Annotated[str, Form()],
    plan: Annotated[str, Form()] = "",
    prepaid: Annotated[bool, Form()] = False,
) -> Response:
    """Create a tenant (tenant.create in the audit log)."""
    actor = caller.actor(request_id)

    def act(session: Session) -> str:
        tenant = create_tenant(session, name, plan_name=plan or None, prepaid=prepaid, actor=actor)
        return describe_tenant(session, tenant).name

    created = in_transaction(database, act)
    return RedirectResponse(
        request_url(f"/console/tenants/{created}", "tenant-created"), status_code=303
    )


@router.get("/tenants/{name}")
def tenant(
    request: Request, name: str, database: DatabaseDep, settings: SettingsDep, caller: TenantsPage
) -> Response:
    """One tenant: balance, and what the viewer's scopes may read of it: this month's usage per
    day, keys, invoices, credit entries."""
    today = utcnow().date()
    held = caller.scopes

    def load(session: Session) -> dict[str, object]:
        # Only what the viewer may read is loaded at all, as the admin API would answer it.
        return {
            "detail": tenant_detail(session, name),
            "keys": list_api_keys(session, name) if may_read(held, Data.keys) else [],
            "usage": daily_usage(session, month_start(today), today + timedelta(days=1), name)
            if may_read(held, Data.usage)
            else None,
            "invoices": list_invoices(session, name) if may_read(held, Data.invoices) else [],
            "credits": list_credit_entries(session, name) if may_read(held, Data.credit) else [],
        }

    context = in_transaction(database, load)
    return render(
        request,
        "admin/tenant.html",
        {
            **context,
            "key_scopes": list(KeyScope),
            "credit_idempotency_key": f"console-{secrets.token_hex(8)}",
            "portal_link_max_minutes": max(1, settings.console_portal_link_seconds // 60),
        },
    )


@router.post("/tenants/{name}/credits")
def add_credit_form(
    name: str,
    database: DatabaseDep,
    caller: CreditWrite,
    request_id: RequestId,
    _recent: RecentlyAuthenticated,
    amount: Annotated[str, Form()],
    idempotency_key: Annotated[str, Form()],
    kind: Annotated[str, Form()] = "topup",
    note: Annotated[str, Form()] = "",
) -> Response:
    """Apply a top-up or adjustment once per idempotency key (the form carries a fresh one, so
    submitting it twice applies it once)."""
    actor = caller.actor(request_id)
    micros = parse_amount_micros(amount)
    _entry, created = in_transaction(
        database,
        lambda session: add_credit(
            session,
            name,
            micros,
            idempotency_key=idempotency_key,
            kind=kind,
            note=note,
            actor=actor,
        ),
    )
    notice = "credit-added" if created else "credit-repeated"
    return RedirectResponse(request_url(f"/console/tenants/{name}", notice), status_code=303)


@router.post("/tenants/{name}/keys")
def create_key_form(
    request: Request,
    name: str,
    database: DatabaseDep,
    caller: KeysWrite,
    request_id: RequestId,
    _recent: RecentlyAuthenticated,
    key_name: Annotated[str, Form()] = "default",
    scopes: Annotated[list[KeyScope] | None, Form()] = None,
    expires_in_days: Annotated[int | None, Form(gt=0)] = None,
) -> Response:
    """Create a key; its secret is on the page this answers with, and nowhere else ever."""
    actor = caller.actor(request_id)
    created = in_transaction(
        database,
        lambda session: create_api_key(
            session,
            name,
            name=key_name or "default",
            scopes=scopes or None,
            expires_in=timedelta(days=expires_in_days) if expires_in_days else None,
            actor=actor,
        ),
    )
    return render(
        request,
        "key_created.html",
        {"created": created, "back": f"/console/tenants/{name}", "rotated": None},
    )


@router.post("/keys/{prefix}/revoke")
def revoke_key_form(
    prefix: str,
    database: DatabaseDep,
    key_cache: KeyCacheDep,
    caller: KeysWrite,
    request_id: RequestId,
) -> Response:
    """Revoke a key; every replica refuses it within GATEWAY_KEY_CACHE_SECONDS."""
    actor = caller.actor(request_id)
    revoked = in_transaction(database, lambda session: revoke_api_key(session, prefix, actor=actor))
    key_cache.evict(revoked.prefix)
    return RedirectResponse(
        request_url(f"/console/tenants/{revoked.tenant}", "key-revoked"), status_code=303
    )


@router.post("/keys/{prefix}/rotate")
def rotate_key_form(
    request: Request,
    prefix: str,
    database: DatabaseDep,
    key_cache: KeyCacheDep,
    caller: KeysWrite,
    request_id: RequestId,
    _recent: RecentlyAuthenticated,
    grace_seconds: Annotated[int, Form(ge=0)] = 86_400,
) -> Response:
    """Issue a successor key (secret shown once); the old one works for the grace period."""
    actor = caller.actor(request_id)
    rotation = in_transaction(
        database,
        lambda session: rotate_api_key(
            session, prefix, grace=timedelta(seconds=grace_seconds), actor=actor
        ),
    )
    key_cache.evict(rotation.old.prefix)
    return render(
        request,
        "key_created.html",
        {
            "created": rotation.new,
            "back": f"/console/tenants/{rotation.old.tenant}",
            "rotated": rotation.old,
        },
    )


@router.post("/tenants/{name}/portal-links")
def create_portal_link_form(
    request: Request,
    name: str,
    database: DatabaseDep,
    settings: SettingsDep,
    caller: PortalLinksWrite,
    request_id: RequestId,
    expires_in_minutes: Annotated[int | None, Form(gt=0)] = None,
) -> Response:
    """A single-use, expiring link to the tenant's portal, shown once; it needs every scope
    of what the portal does (``gateway.admin.scopes.WRITE[Data.portal_links]``)."""
    actor = caller.actor(request_id)
    base_url = settings.console_public_url or str(request.base_url)
    requested = expires_in_minutes * 60 if expires_in_minutes is not None else None
    ttl = portal_link_lifetime(requested, settings.console_portal_link_seconds)
    link = in_transaction(
        database,
        lambda session: create_portal_link(session, name, base_url=base_url, ttl=ttl, actor=actor),
    )
    return render(request, "admin/portal_link.html", {"link": link})


@router.get("/plans")
def plans(request: Request, database: DatabaseDep, caller: PlansPage) -> Response:
    """Every plan and its terms."""
    found = in_transaction(
        database,
        lambda session: [PlanPublic.of(plan) for plan in plans_repository.list_plans(session)],
    )
    return render(
        request,
        "admin/plans.html",
        {"plans": found, "units": list(TokenUnit), "can": {s.value for s in caller.scopes}},
    )


@router.post("/plans")
def create_plan_form(
    database: DatabaseDep,
    caller: PlansWrite,
    request_id: RequestId,
    _recent: RecentlyAuthenticated,
    name: Annotated[str, Form(min_length=1, max_length=64)],
    price_per_1k_tokens_micros: Annotated[int, Form(ge=0)],
    token_unit: Annotated[TokenUnit, Form()] = TokenUnit.char,
    currency: Annotated[str, Form(min_length=3, max_length=3)] = "USD",
    monthly_token_quota: Annotated[int | None, Form(gt=0)] = None,
    requests_per_minute: Annotated[int | None, Form(gt=0)] = None,
    concurrency_limit: Annotated[int | None, Form(gt=0)] = None,
    max_tokens_per_audio_second: Annotated[int, Form(gt=0)] = 50,
    cache_hit_price_bp: Annotated[int, Form(ge=0, le=10_000)] = 0,
) -> Response:
    """Create a plan (plan.create in the audit log)."""
    actor = caller.actor(request_id)
    in_transaction(
        database,
        lambda session: create_plan(
            session,
            name,
            price_per_1k_tokens_micros=price_per_1k_tokens_micros,
            token_unit=token_unit.value,
            currency=currency.upper(),
            monthly_token_quota=monthly_token_quota,
            requests_per_minute=requests_per_minute,
            concurrency_limit=concurrency_limit,
            max_tokens_per_audio_second=max_tokens_per_audio_second,
            cache_hit_price_bp=cache_hit_price_bp,
            actor=actor,
        ),
    )
    return RedirectResponse("/console/plans?notice=plan-created", status_code=303)

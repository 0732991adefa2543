"""Admin: tenants and their prepaid credit."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlmodel import Session

from billing.credits.schemas import CreditEntryPublic
from billing.credits.service import add_credit, list_credit_entries
from billing.tenants import repository
from billing.tenants.schemas import TenantDetail, TenantPublic
from billing.tenants.service import create_tenant, describe_tenant, tenant_detail, update_tenant
from gateway.admin.auth import (
    CreditRead,
    CreditWrite,
    PortalLinksWrite,
    TenantsRead,
    TenantsWrite,
)
from gateway.admin.deps import TenantName, in_transaction
from gateway.admin.schemas import CreditCreate, TenantChange, TenantCreate
from gateway.console.portal_links.service import (
    PortalLinkCreate,
    PortalLinkPublic,
    create_portal_link,
    portal_link_lifetime,
)
from gateway.deps import DatabaseDep, RequestId, SettingsDep
from gateway.openapi import error_responses

router = APIRouter(
    prefix="/admin/tenants", tags=["admin: tenants"], responses=error_responses(404, 409)
)


@router.get("")
def list_tenants(database: DatabaseDep, _claims: TenantsRead) -> list[TenantPublic]:
    """Every tenant, by name."""
    return in_transaction(
        database,
        lambda session: [
            describe_tenant(session, tenant) for tenant in repository.list_tenants(session)
        ],
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create(
    body: TenantCreate, database: DatabaseDep, claims: TenantsWrite, request_id: RequestId
) -> TenantPublic:
    """Create a tenant on a plan (the default plan when none is named)."""
    actor = claims.actor(request_id)

    def act(session: Session) -> TenantPublic:
        tenant = create_tenant(
            session,
            body.name,
            plan_name=body.plan,
            prepaid=body.prepaid,
            actor=actor,
        )
        return describe_tenant(session, tenant)

    return in_transaction(database, act)


@router.get("/{name}")
def show(name: TenantName, database: DatabaseDep, _claims: TenantsRead) -> TenantDetail:
    """A tenant with its balance and this month's tokens against its quota."""
    return in_transaction(database, lambda session: tenant_detail(session, name))


@router.patch("/{name}")
def update(
    name: TenantName,
    body: TenantChange,
    database: DatabaseDep,
    claims: TenantsWrite,
    request_id: RequestId,
) -> TenantPublic:
    """Move a tenant to another plan, or between prepaid and postpaid."""
    actor = claims.actor(request_id)
    return in_transaction(
        database,
        lambda session: describe_tenant(session, update_tenant(session, name, body, actor=actor)),
    )


@router.get("/{name}/credits")
def list_credits(
    name: TenantName, database: DatabaseDep, _claims: CreditRead
) -> list[CreditEntryPublic]:
    """The tenant's credit entries, oldest first."""
    return in_transaction(database, lambda session: list_credit_entries(session, name))


@router.post(
    "/{name}/credits",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "description": "A repeat of an earlier idempotency key: the first entry, unchanged.",
            "model": CreditEntryPublic,
        }
    },
)
def add_credits(
    name: TenantName,
    body: CreditCreate,
    response: Response,
    database: DatabaseDep,
    claims: CreditWrite,
    request_id: RequestId,
) -> CreditEntryPublic:
    """Apply a top-up or adjustment once per idempotency key: a repeat answers 200 with the
    first entry and changes nothing."""
    actor = claims.actor(request_id)
    entry, created = in_transaction(
        database,
        lambda session: add_credit(
            session,
            name,
            body.amount_micros,
            idempotency_key=body.idempotency_key,
            kind=body.kind,
            note=body.note,
            actor=actor,
        ),
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return CreditEntryPublic.of(entry, name)


@router.post("/{name}/portal-links", status_code=status.HTTP_201_CREATED)
def create_portal_link_endpoint(
    name: TenantName,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    claims: PortalLinksWrite,
    request_id: RequestId,
    body: PortalLinkCreate | None = None,
) -> PortalLinkPublic:
    """A single-use link that opens the tenant's customer portal, valid for
    ``GATEWAY_CONSOLE_PORTAL_LINK_SECONDS`` or the shorter ``expires_in_seconds``; its URL, whose
    token follows ``#``, is in this response only. The portal shows the tenant, its usage, keys
    and invoices and creates keys, so the link needs every scope that takes: tenants:write,
    tenants:read, keys:read, keys:write, billing:read."""
    actor = claims.actor(request_id)
    base_url = settings.console_public_url or str(request.base_url)
    ttl = portal_link_lifetime(
        body.expires_in_seconds if body is not None else None,
        settings.console_portal_link_seconds,
    )
    return in_transaction(
        database,
        lambda session: create_portal_link(session, name, base_url=base_url, ttl=ttl, actor=actor),
    )

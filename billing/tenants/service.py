"""Tenants: the customer accounts that own keys and are billed."""

from __future__ import annotations

from sqlmodel import Session

from billing.errors import AlreadyExists, InvalidValue, NotFound
from billing.models import Tenant, TenantAccount
from billing.plans.service import ensure_default_plan, require_plan
from billing.tenants import repository


def create_tenant(
    session: Session, name: str, *, plan_name: str | None = None, prepaid: bool = False
) -> Tenant:
    name = name.strip()
    if not name:
        raise InvalidValue("a tenant needs a name")
    if repository.get_tenant_by_name(session, name) is not None:
        raise AlreadyExists(f"tenant {name!r} exists already")
    plan = require_plan(session, plan_name) if plan_name else ensure_default_plan(session)
    assert plan.id is not None
    tenant = repository.add_tenant(session, Tenant(name=name, plan_id=plan.id, prepaid=prepaid))
    assert tenant.id is not None
    session.add(TenantAccount(tenant_id=tenant.id))
    session.flush()
    return tenant


def require_tenant(session: Session, name: str) -> Tenant:
    tenant = repository.get_tenant_by_name(session, name)
    if tenant is None:
        raise NotFound(f"no tenant named {name!r}")
    return tenant

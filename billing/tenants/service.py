"""Tenants: the customer accounts that own keys and are billed."""

from __future__ import annotations

from sqlmodel import Session

from billing import limits
from billing.accounts.repository import get_account, get_period
from billing.audit import service as audit
from billing.audit.schemas import Actor
from billing.errors import AlreadyExists, InvalidValue, NotFound
from billing.models import Tenant, TenantAccount
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.plans.repository import get_plan
from billing.plans.service import ensure_default_plan, require_plan
from billing.tenants import repository
from billing.tenants.schemas import (
    TenantDetail,
    TenantPublic,
    TenantUpdate,
    tenant_balance,
    tenant_public,
)


def create_tenant(
    session: Session,
    name: str,
    *,
    actor: Actor,
    plan_name: str | None = None,
    prepaid: bool = False,
) -> Tenant:
    name = name.strip()
    if not name:
        raise InvalidValue("a tenant needs a name")
    limits.check_length("a tenant's name", name, limits.MAX_TENANT_NAME_LENGTH)
    if repository.get_tenant_by_name(session, name) is not None:
        raise AlreadyExists(f"tenant {name!r} exists already")
    plan = (
        require_plan(session, plan_name) if plan_name else ensure_default_plan(session, actor=actor)
    )
    assert plan.id is not None
    tenant = repository.add_tenant(session, Tenant(name=name, plan_id=plan.id, prepaid=prepaid))
    assert tenant.id is not None
    session.add(TenantAccount(tenant_id=tenant.id))
    session.flush()
    audit.record(session, actor, "tenant.create", "tenant", name, after=tenant_public(tenant, plan))
    return tenant


def update_tenant(session: Session, name: str, changes: TenantUpdate, *, actor: Actor) -> Tenant:
    """Move a tenant to another plan, or between prepaid and postpaid. Open reservations keep
    the terms they were made under; the next request uses the new ones."""
    tenant = require_tenant(session, name)
    before = describe_tenant(session, tenant)
    if changes.plan is not None:
        plan = require_plan(session, changes.plan)
        assert plan.id is not None
        tenant.plan_id = plan.id
    if changes.prepaid is not None:
        tenant.prepaid = changes.prepaid
    after = describe_tenant(session, tenant)
    if after != before:
        repository.add_tenant(session, tenant)
        audit.record(session, actor, "tenant.update", "tenant", name, before=before, after=after)
    return tenant


def describe_tenant(session: Session, tenant: Tenant) -> TenantPublic:
    plan = get_plan(session, tenant.plan_id)
    assert plan is not None
    return tenant_public(tenant, plan)


def tenant_detail(session: Session, name: str) -> TenantDetail:
    tenant = require_tenant(session, name)
    assert tenant.id is not None
    plan = get_plan(session, tenant.plan_id)
    account = get_account(session, tenant.id)
    assert plan is not None
    assert account is not None
    period = billing_period(utcnow())
    counters = get_period(session, tenant.id, period)
    return TenantDetail(
        tenant=tenant_public(tenant, plan),
        balance=tenant_balance(account, plan),
        period=period,
        tokens_used=counters.tokens_used if counters else 0,
        tokens_reserved=counters.tokens_reserved if counters else 0,
        monthly_token_quota=plan.monthly_token_quota,
    )


def require_tenant(session: Session, name: str) -> Tenant:
    tenant = repository.get_tenant_by_name(session, name)
    if tenant is None:
        raise NotFound(f"no tenant named {name!r}")
    return tenant

"""Tenants as the admin API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from billing.models import Plan, Tenant, TenantAccount


class TenantUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: str | None = None
    prepaid: bool | None = None


class TenantPublic(BaseModel):
    id: int
    name: str
    plan: str
    prepaid: bool
    created_at: datetime


class TenantBalance(BaseModel):
    """A tenant's money as the ledger holds it, in integer micro-units."""

    currency: str
    credit_micros: int
    spent_micros: int
    reserved_micros: int
    available_micros: int


class TenantDetail(BaseModel):
    """A tenant with its money and this month's tokens against its quota."""

    tenant: TenantPublic
    balance: TenantBalance
    period: str
    tokens_used: int
    tokens_reserved: int
    monthly_token_quota: int | None


def tenant_public(tenant: Tenant, plan: Plan) -> TenantPublic:
    assert tenant.id is not None
    return TenantPublic(
        id=tenant.id,
        name=tenant.name,
        plan=plan.name,
        prepaid=tenant.prepaid,
        created_at=tenant.created_at,
    )


def tenant_balance(account: TenantAccount, plan: Plan) -> TenantBalance:
    return TenantBalance(
        currency=plan.currency,
        credit_micros=account.credit_micros,
        spent_micros=account.spent_micros,
        reserved_micros=account.reserved_micros,
        available_micros=account.available_micros,
    )

"""Queries of tenant_accounts and tenant_periods: the rows reservations lock and update."""

from __future__ import annotations

from sqlmodel import Session, select

from billing.errors import NotFound
from billing.models import TenantAccount, TenantPeriod


def lock_account(session: Session, tenant_id: int) -> TenantAccount:
    """The tenant's account row, locked until the transaction ends.

    FOR UPDATE serializes reservations of one tenant across gateway replicas on PostgreSQL;
    SQLite serializes every write transaction already (BEGIN IMMEDIATE, see billing.db).
    """
    statement = select(TenantAccount).where(TenantAccount.tenant_id == tenant_id).with_for_update()
    account = session.exec(statement).first()
    if account is None:
        raise NotFound(f"tenant {tenant_id} has no account")
    return account


def get_account(session: Session, tenant_id: int) -> TenantAccount | None:
    return session.get(TenantAccount, tenant_id)


def get_period(session: Session, tenant_id: int, period: str) -> TenantPeriod | None:
    return session.get(TenantPeriod, (tenant_id, period))

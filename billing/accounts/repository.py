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


def period_for_update(session: Session, tenant_id: int, period: str) -> TenantPeriod:
    """The tenant's token counters for ``period``, created at zero on first use. Callers hold
    the account lock, so two replicas never create the same period row at once."""
    row = get_period(session, tenant_id, period)
    if row is None:
        row = TenantPeriod(tenant_id=tenant_id, period=period, tokens_used=0, tokens_reserved=0)
        session.add(row)
        session.flush()
    return row

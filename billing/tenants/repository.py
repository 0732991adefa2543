"""Queries of the tenants table."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from billing.models import Tenant


def get_tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.exec(select(Tenant).where(Tenant.name == name)).first()


def list_tenants(session: Session) -> Sequence[Tenant]:
    return session.exec(select(Tenant).order_by(Tenant.name)).all()


def add_tenant(session: Session, tenant: Tenant) -> Tenant:
    session.add(tenant)
    session.flush()
    return tenant


def search_tenants(session: Session, text: str, limit: int) -> Sequence[Tenant]:
    """Tenants whose name contains ``text`` (any case), by name; every tenant for ``""``."""
    statement = select(Tenant)
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(col(Tenant.name).ilike(f"%{escaped}%", escape="\\"))
    return session.exec(statement.order_by(col(Tenant.name)).limit(limit)).all()

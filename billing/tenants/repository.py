"""Queries of the tenants table."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, select

from billing.models import Tenant


def get_tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.exec(select(Tenant).where(Tenant.name == name)).first()


def list_tenants(session: Session) -> Sequence[Tenant]:
    return session.exec(select(Tenant).order_by(Tenant.name)).all()


def add_tenant(session: Session, tenant: Tenant) -> Tenant:
    session.add(tenant)
    session.flush()
    return tenant

"""Queries of the api_keys table."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, select

from billing.models import ApiKey, Plan, Tenant


def get_key_with_tenant_and_plan(
    session: Session, prefix: str
) -> tuple[ApiKey, Tenant, Plan] | None:
    statement = (
        select(ApiKey, Tenant, Plan)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)  # type: ignore[arg-type]
        .join(Plan, Plan.id == Tenant.plan_id)  # type: ignore[arg-type]
        .where(ApiKey.prefix == prefix)
    )
    row = session.exec(statement).first()
    if row is None:
        return None
    key, tenant, plan = row
    return key, tenant, plan


def list_keys(session: Session, tenant_id: int | None = None) -> Sequence[tuple[ApiKey, Tenant]]:
    statement = select(ApiKey, Tenant).join(
        Tenant,
        Tenant.id == ApiKey.tenant_id,  # type: ignore[arg-type]
    )
    if tenant_id is not None:
        statement = statement.where(ApiKey.tenant_id == tenant_id)
    return session.exec(statement.order_by(Tenant.name, ApiKey.id)).all()  # type: ignore[arg-type]


def add_key(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key

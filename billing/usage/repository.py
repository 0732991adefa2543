"""Queries of the usage_events table (insert and aggregate; never update)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, true
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from billing.models import ApiKey, Tenant, UsageEvent


def insert_usage_event(session: Session, event: UsageEvent) -> UsageEvent:
    session.add(event)
    session.flush()
    return event


def get_usage_event(session: Session, request_id: str) -> UsageEvent | None:
    return session.exec(select(UsageEvent).where(UsageEvent.request_id == request_id)).first()


def usage_by_key(
    session: Session, tenant_id: int | None = None, since: datetime | None = None
) -> list[tuple[Any, ...]]:
    """One row per API key (keys without usage included), with sums over its events."""
    statement = (
        sql_select(
            col(Tenant.name),
            col(ApiKey.prefix),
            col(ApiKey.name),
            func.count(col(UsageEvent.id)),
            func.coalesce(func.sum(UsageEvent.audio_ms), 0),
            func.coalesce(func.sum(UsageEvent.billed_tokens), 0),
            func.coalesce(func.sum(UsageEvent.cost_micros), 0),
            func.max(UsageEvent.currency),
        )
        .select_from(ApiKey)
        .join(Tenant, col(Tenant.id) == col(ApiKey.tenant_id))
        .outerjoin(
            UsageEvent,
            and_(
                col(UsageEvent.api_key_id) == col(ApiKey.id),
                true() if since is None else col(UsageEvent.created_at) >= since,
            ),
        )
        .group_by(col(Tenant.name), col(ApiKey.id), col(ApiKey.prefix), col(ApiKey.name))
        .order_by(col(Tenant.name), col(ApiKey.id))
    )
    if tenant_id is not None:
        statement = statement.where(col(ApiKey.tenant_id) == tenant_id)
    return [tuple(row) for row in session.execute(statement).all()]

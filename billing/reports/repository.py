"""The grouped usage query; calendar grouping is done by the database, in UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlmodel import Session, col

from billing.models import ApiKey, Tenant, UsageEvent
from billing.reports.schemas import GroupBy


def _calendar(session: Session, unit: GroupBy) -> ColumnElement[Any]:
    created = col(UsageEvent.created_at)
    if session.get_bind().dialect.name == "postgresql":
        pattern = "YYYY-MM-DD" if unit is GroupBy.day else "YYYY-MM"
        return func.to_char(func.timezone("UTC", created), pattern)
    # SQLite stores UTC timestamps as ISO text: the prefix is the day or month.
    return func.substr(created, 1, 10 if unit is GroupBy.day else 7)


def grouped_usage(
    session: Session,
    start: datetime,
    end: datetime,
    group_by: list[GroupBy],
    tenant_id: int | None = None,
) -> list[tuple[Any, ...]]:
    columns: dict[GroupBy, Any] = {
        GroupBy.tenant: col(Tenant.name),
        GroupBy.key: col(ApiKey.prefix),
        GroupBy.model: col(UsageEvent.model),
        GroupBy.day: _calendar(session, GroupBy.day),
        GroupBy.month: _calendar(session, GroupBy.month),
    }
    keys = [columns[group].label(group.value) for group in group_by]
    statement = (
        select(
            *keys,
            col(UsageEvent.currency),
            func.count(col(UsageEvent.id)),
            func.sum(col(UsageEvent.audio_ms)),
            func.sum(col(UsageEvent.output_tokens)),
            func.sum(col(UsageEvent.billed_tokens)),
            func.sum(col(UsageEvent.cost_micros)),
        )
        .select_from(UsageEvent)
        .join(Tenant, col(Tenant.id) == col(UsageEvent.tenant_id))
        .join(ApiKey, col(ApiKey.id) == col(UsageEvent.api_key_id))
        .where(col(UsageEvent.created_at) >= start, col(UsageEvent.created_at) < end)
        .group_by(*keys, col(UsageEvent.currency))
        .order_by(*keys, col(UsageEvent.currency))
    )
    if tenant_id is not None:
        statement = statement.where(col(UsageEvent.tenant_id) == tenant_id)
    return [tuple(row) for row in session.execute(statement).all()]

"""What admin endpoints share: one unit of work per request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Path, Query
from sqlmodel import Session

from billing import limits
from billing.db import Database
from billing.periods import PERIOD_PATTERN

T = TypeVar("T")


def in_transaction(database: Database, action: Callable[[Session], T]) -> T:
    """Run ``action`` in one committed transaction: a write and its audit entry land together.
    Billing errors propagate to the app's handler, which maps them to 400/404/409."""
    with database.transaction() as session:
        return action(session)


# Path and query parameters the admin routes share, bounded by their columns.
TenantName = Annotated[
    str, Path(min_length=1, max_length=limits.MAX_TENANT_NAME_LENGTH, examples=["acme"])
]
PlanName = Annotated[
    str, Path(min_length=1, max_length=limits.MAX_PLAN_NAME_LENGTH, examples=["standard"])
]
# A key's 12-character prefix, or the whole key.
KeyPrefix = Annotated[str, Path(min_length=1, max_length=128, examples=["3f9a0c1b2d4e"])]
Period = Annotated[str, Path(pattern=PERIOD_PATTERN, examples=["2026-11"])]
# A node's id or its URL.
NodeRef = Annotated[str, Path(min_length=1, max_length=300, examples=["node_1a2b3c4d5e"])]
TenantFilter = Annotated[str | None, Query(min_length=1, max_length=limits.MAX_TENANT_NAME_LENGTH)]
PeriodFilter = Annotated[str | None, Query(pattern=PERIOD_PATTERN, examples=["2026-11"])]

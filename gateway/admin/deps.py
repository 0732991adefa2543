"""What admin endpoints share: one unit of work per request."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlmodel import Session

from billing.db import Database

T = TypeVar("T")


def in_transaction(database: Database, action: Callable[[Session], T]) -> T:
    """Run ``action`` in one committed transaction: a write and its audit entry land together.
    Billing errors propagate to the app's handler, which maps them to 400/404/409."""
    with database.transaction() as session:
        return action(session)

"""Counts the gateway exports as Prometheus gauges on every scrape of every replica, so each is
one index-backed query: reservations by ``state`` (and ``expires_at``), jobs by
``(state, available_at)``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, func, select
from sqlmodel import col

from billing.models import Job, Reservation


def open_reservations(connection: Connection) -> int:
    """Reservations held now, over all tenants."""
    statement = select(func.count()).where(col(Reservation.state) == "open")
    return int(connection.execute(statement).scalar_one())


def expired_reservations(connection: Connection, now: datetime) -> int:
    """Reservations still open past their expiry: held by a gateway that stopped renewing
    them and not yet released by any sweeper."""
    statement = select(func.count()).where(
        col(Reservation.state) == "open", col(Reservation.expires_at) < now
    )
    return int(connection.execute(statement).scalar_one())


def jobs_by_state(connection: Connection, states: Iterable[str]) -> dict[str, int]:
    """How many jobs are in each of ``states`` (a state with none is missing)."""
    state = col(Job.state)
    statement = select(state, func.count()).where(state.in_(list(states))).group_by(state)
    return {str(name): int(count) for name, count in connection.execute(statement)}

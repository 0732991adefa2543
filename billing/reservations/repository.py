"""A reservation's transitions as ``billing.statements`` steps: hold (reserve), close (settle,
release), reopen, renew, and the locked read the slower paths start from.

Each ``*_steps`` function is the transition, written once; the blocking wrappers below run it
on a session's connection, and ``billing.aio`` runs the same steps on the event loop. The SQL
lives in ``billing.reservations.statements``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlmodel import Session

from billing.errors import NotFound
from billing.reservations import statements as sql
from billing.statements import Fetch, Step, Steps, run


class HoldOutcome(NamedTuple):
    available_micros: int  # credit - spent - reserved, as locked, before this hold
    held: bool


@dataclass(frozen=True, slots=True)
class LockedReservation:
    """A reservation as read with its tenant's account lock, and what the account has left."""

    state: str
    period: str
    amount_micros: int
    tokens: int
    available_micros: int  # the account's credit - spent - reserved


@dataclass(frozen=True, slots=True)
class StateChange:
    """One close of a reservation: its state change and what moves between the account's and
    the month's totals. What it held (amount, tokens, month) comes from its own row."""

    request_id: str
    tenant_id: int
    from_state: str
    to_state: str
    closed_at: datetime
    min_tokens: int = 0  # close it only if it holds at least this many tokens
    spent_micros: int = 0  # onto the account's spent_micros
    used_tokens: int = 0  # onto the month's tokens_used

    @property
    def releases_hold(self) -> bool:
        # Only an open reservation still holds its amount; a released one gave it back already.
        return self.from_state == "open"


@dataclass(frozen=True, slots=True)
class KeyCompletion:
    """The Idempotency-Key a settlement completes, and the result it stores for replays."""

    key: str
    result: str


def hold_steps(
    dialect: str, reservation: dict[str, Any], *, check_credit: bool, quota: int | None
) -> Steps[HoldOutcome]:
    """Lock the tenant's account and hold what the ``reservation`` row holds: insert the row
    and add its amount and tokens to the account's and the month's reserved totals. Nothing is
    written when ``check_credit`` is set and the account's available credit is short, or when
    the month's tokens would pass ``quota``.

    The quota is checked on the counter row's latest version (ON CONFLICT … DO UPDATE … WHERE);
    the month's first reservation creates the row.
    """
    params = {f"reservation_{name}": value for name, value in reservation.items()}
    params["quota"] = quota
    fits_quota = quota is None or reservation["tokens"] <= quota
    if dialect == "postgresql":
        statement = sql.postgres_hold(check_credit, fits_quota, quota is not None)
        row = yield Step(statement, params, Fetch.first)
        if row is None:
            raise NotFound(f"tenant {reservation['tenant_id']} has no account")
        return HoldOutcome(row.available, row.held)
    row = yield Step(sql.lock_available(), params, Fetch.first)
    if row is None:
        raise NotFound(f"tenant {reservation['tenant_id']} has no account")
    if (check_credit and row.available < reservation["amount_micros"]) or not fits_quota:
        return HoldOutcome(row.available, held=False)
    reserve_tokens, *rest = sql.sqlite_hold(dialect, quota is not None)
    if (yield Step(reserve_tokens, params, Fetch.first)) is None:
        return HoldOutcome(row.available, held=False)
    for statement in rest:
        yield Step(statement, params)
    return HoldOutcome(row.available, held=True)


def reopen_steps(
    dialect: str, reservation: dict[str, Any], *, check_credit: bool, quota: int | None
) -> Steps[tuple[str | None, HoldOutcome]]:
    """Hold a released reservation again, for a retry that runs under the same request id
    (one reservation per request, ever). Returns the state found under the lock and whether
    the hold went through; nothing is written unless it was ``released`` and the credit and
    quota allow. Several statements: run it in one transaction."""
    params = {f"reservation_{name}": value for name, value in reservation.items()}
    params["quota"] = quota
    row = yield Step(sql.lock_available(), params, Fetch.first)
    if row is None:
        raise NotFound(f"tenant {reservation['tenant_id']} has no account")
    state = yield Step(sql.state_of(), params, Fetch.scalar)
    fits_quota = quota is None or reservation["tokens"] <= quota
    if state != "released":
        return state, HoldOutcome(row.available, held=False)
    if (check_credit and row.available < reservation["amount_micros"]) or not fits_quota:
        return state, HoldOutcome(row.available, held=False)
    reserve_tokens, hold_micros, _insert = sql.sqlite_hold(dialect, quota is not None)
    if (yield Step(reserve_tokens, params, Fetch.first)) is None:
        return state, HoldOutcome(row.available, held=False)
    yield Step(hold_micros, params)
    yield Step(sql.reopen_released(), params)
    return state, HoldOutcome(row.available, held=True)


def close_steps(
    dialect: str,
    change: StateChange,
    usage: dict[str, Any] | None = None,
    key: KeyCompletion | None = None,
) -> Steps[bool]:
    """Lock the tenant's account, move reservation ``change.request_id`` from ``from_state``
    to ``to_state``, and move the amounts between the account's and the month's totals. A
    settlement also inserts the ``usage`` row and completes the request's Idempotency-Key
    ``key``, storing its result. False, and nothing written, when there is no such reservation
    in ``from_state`` holding ``min_tokens`` or more. On PostgreSQL one statement. (What the
    client was told is recorded apart, once the response is built: ``billing.usage.returned``.)"""
    params: dict[str, Any] = {
        "request": change.request_id,
        "tenant": change.tenant_id,
        "from_state": change.from_state,
        "to_state": change.to_state,
        "min_tokens": change.min_tokens,
        "now": change.closed_at,
        "spent_micros": change.spent_micros,
        "used_tokens": change.used_tokens,
        "releases_hold": change.releases_hold,
    }
    if usage is not None:
        params.update({f"usage_{name}": value for name, value in usage.items()})
    if key is not None:
        params["idempotency_key"] = key.key
        params["idempotency_result"] = key.result
    if dialect == "postgresql":
        statement = sql.postgres_close(usage is not None, key is not None)
        return bool((yield Step(statement, params, Fetch.scalar)))
    change_state, *rest = sql.sqlite_close(dialect, usage is not None, key is not None)
    closed = yield Step(change_state, params, Fetch.first)
    if closed is None:
        return False
    params["month"] = closed.period
    params["released_micros"] = closed.amount_micros if change.releases_hold else 0
    params["released_tokens"] = closed.tokens if change.releases_hold else 0
    for statement in rest:
        yield Step(statement, params)
    return True


def charge_hit_steps(
    dialect: str,
    tenant_id: int,
    month: str,
    usage: dict[str, Any],
    *,
    check_credit: bool,
    quota: int | None,
    key: KeyCompletion | None = None,
) -> Steps[HoldOutcome]:
    """Charge a request the result cache answered, with no reservation: the month's tokens
    used (within ``quota``), the usage row, the account's spend, and
    the key's completion. ``held`` False, and nothing written, when the credit (checked if
    ``check_credit``) or the quota does not cover it. One statement on PostgreSQL."""
    params: dict[str, Any] = {
        "tenant": tenant_id,
        "month": month,
        "used_tokens": usage["billed_tokens"],
        "spent_micros": usage["cost_micros"],
        "quota": quota,
        "now": usage["created_at"],
        **{f"usage_{name}": value for name, value in usage.items()},
    }
    if key is not None:
        params.update(
            request=usage["request_id"], idempotency_key=key.key, idempotency_result=key.result
        )
    paid = usage["cost_micros"] > 0
    fits_quota = quota is None or usage["billed_tokens"] <= quota
    with_quota = quota is not None
    if dialect == "postgresql":
        statement = sql.postgres_charge_hit(
            check_credit, fits_quota, with_quota, paid, key is not None
        )
        row = yield Step(statement, params, Fetch.first)
        return HoldOutcome(row.available if check_credit else 0, bool(row.charged))
    available = 0
    if check_credit:
        available = yield Step(sql.lock_account_available(), params, Fetch.scalar)
        if available is None:
            raise NotFound(f"tenant {tenant_id} has no account")
        if available < usage["cost_micros"]:
            return HoldOutcome(available, held=False)
    if not fits_quota:
        return HoldOutcome(available, held=False)
    gate, *rest = sql.sqlite_charge_hit(dialect, with_quota, paid, key is not None)
    if (yield Step(gate, params, Fetch.first)) is None:
        return HoldOutcome(available, held=False)
    for statement in rest:
        yield Step(statement, params)
    return HoldOutcome(available, held=True)


def lock_and_read_steps(tenant_id: int, request_id: str) -> Steps[LockedReservation | None]:
    """Lock the tenant's account row and read reservation ``request_id`` (None: there is none).

    On PostgreSQL the reservation is read by the statement that waited for the lock, so a
    state that another transaction changed meanwhile can show its old value. A close re-checks
    the state it changes; when that finds another state, read again: from then on the lock is
    held and the state cannot move.
    """
    row = yield Step(sql.lock_and_read(), {"tenant": tenant_id, "request": request_id}, Fetch.first)
    if row is None:
        raise NotFound(f"tenant {tenant_id} has no account")
    if row.state is None:
        return None
    return LockedReservation(
        row.state,
        row.period,
        row.amount_micros,
        row.tokens,
        available_micros=row.available,
    )


def locked_month_tokens_steps(tenant_id: int, period: str) -> Steps[int]:
    """The month's tokens used and reserved, read with its counter row locked; run it under
    the tenant's account lock (``lock_and_read_steps``)."""
    params = {"tenant": tenant_id, "period": period}
    tokens = yield Step(sql.lock_month_tokens(), params, Fetch.scalar)
    return int(tokens or 0)


def renew_steps(request_id: str, expires_at: datetime) -> Steps[bool]:
    """Push an open reservation's expiry to ``expires_at``; False when it is no longer open."""
    row = yield Step(
        sql.renew_expiry(), {"request": request_id, "expires_at": expires_at}, Fetch.first
    )
    return row is not None


def tenant_of_steps(request_id: str) -> Steps[int | None]:
    """The tenant of reservation ``request_id`` (which never changes), read without a lock."""
    tenant_id: int | None = yield Step(sql.tenant_of(), {"request": request_id}, Fetch.scalar)
    return tenant_id


# Blocking wrappers, on the session's connection and inside its transaction.


def _dialect(session: Session) -> str:
    return session.connection().dialect.name


def hold(
    session: Session, reservation: dict[str, Any], *, check_credit: bool, quota: int | None
) -> HoldOutcome:
    steps = hold_steps(_dialect(session), reservation, check_credit=check_credit, quota=quota)
    return run(session.connection(), steps)


def close(
    session: Session,
    change: StateChange,
    usage: dict[str, Any] | None = None,
    key: KeyCompletion | None = None,
) -> bool:
    return run(session.connection(), close_steps(_dialect(session), change, usage, key))


def lock_account_and_read(
    session: Session, tenant_id: int, request_id: str
) -> LockedReservation | None:
    return run(session.connection(), lock_and_read_steps(tenant_id, request_id))


def tenant_of(session: Session, request_id: str) -> int | None:
    return run(session.connection(), tenant_of_steps(request_id))


def tokens_held(session: Session, tenant_id: int, period: str) -> int:
    """The month's tokens used and reserved, together (0 before its first reservation)."""
    params = {"tenant": tenant_id, "period": period}
    return int(session.connection().execute(sql.tokens_held(), params).scalar() or 0)

"""Queries of a reservation's transitions: hold (reserve) and close (settle, release).

Each transition takes the tenant's account lock first (FOR UPDATE on PostgreSQL; on SQLite the
transaction's BEGIN IMMEDIATE holds the database's write lock already) and gates its writes on
one of them, the month's token counter for a hold and the state change for a close: when that
one does not apply, nothing is written. On PostgreSQL a transition is one statement, the lock
and the writes being CTEs, each write selecting from its gate; SQLite has no writable CTEs and
runs the same writes one by one.

Statements are built once and run with bound parameters, so Python does not rebuild them and
psycopg prepares each on the server after a few runs. Parameters are named apart from the
columns they fill (``tenant``, ``reservation_tenant_id``): SQLAlchemy reserves a column's own
name for the values of an INSERT or UPDATE of its table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    BindParameter,
    Boolean,
    ColumnElement,
    Connection,
    Executable,
    Exists,
    Select,
    Table,
    and_,
    bindparam,
    case,
    false,
    insert,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel

from billing.errors import NotFound
from billing.models import Reservation, TenantAccount, TenantPeriod, UsageEvent


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


reservations = _table(Reservation)
accounts = _table(TenantAccount)
periods = _table(TenantPeriod)
usage_events = _table(UsageEvent)

# The columns a hold and a settlement insert (closed_at and the usage row's id stay unset).
RESERVATION_COLUMNS = tuple(c.name for c in reservations.columns if c.name != "closed_at")
USAGE_COLUMNS = tuple(c.name for c in usage_events.columns if c.name != "id")


class HoldOutcome(NamedTuple):
    available_micros: int  # credit - spent - reserved, as locked, before this hold
    held: bool


@dataclass(frozen=True, slots=True)
class LockedReservation:
    """A reservation as read with its tenant's account lock."""

    state: str
    period: str
    amount_micros: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Closing:
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
    def gives_back_hold(self) -> bool:
        # Only an open reservation still holds its amount; a released one gave it back already.
        return self.from_state == "open"


def hold(
    session: Session, reservation: dict[str, Any], *, check_credit: bool, quota: int | None
) -> HoldOutcome:
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
    connection = _connection(session)
    if connection.dialect.name == "postgresql":
        statement = _hold_postgres(check_credit, fits_quota, quota is not None)
        row = connection.execute(statement, params).first()
        if row is None:
            raise NotFound(f"tenant {reservation['tenant_id']} has no account")
        return HoldOutcome(row.available, row.held)
    row = connection.execute(_lock_available(), params).first()
    if row is None:
        raise NotFound(f"tenant {reservation['tenant_id']} has no account")
    if (check_credit and row.available < reservation["amount_micros"]) or not fits_quota:
        return HoldOutcome(row.available, held=False)
    reserve_tokens, *rest = _hold_one_by_one(connection.dialect.name, quota is not None)
    if connection.execute(reserve_tokens, params).first() is None:
        return HoldOutcome(row.available, held=False)
    for statement in rest:
        connection.execute(statement, params)
    return HoldOutcome(row.available, held=True)


def tokens_held(session: Session, tenant_id: int, period: str) -> int:
    """The month's tokens used and reserved, together (0 before its first reservation)."""
    statement = select(periods.c.tokens_used + periods.c.tokens_reserved).where(
        periods.c.tenant_id == tenant_id, periods.c.period == period
    )
    return int(_connection(session).execute(statement).scalar() or 0)


def lock_account_and_read(
    session: Session, tenant_id: int, request_id: str
) -> LockedReservation | None:
    """Lock the tenant's account row and read reservation ``request_id`` (None: there is none).

    On PostgreSQL the reservation is read by the statement that waited for the lock, so a
    state that another transaction changed meanwhile can show its old value. ``close``
    re-checks the state it changes; when that finds another state, read again: from then on
    the lock is held and the state cannot move.
    """
    params = {"tenant": tenant_id, "request": request_id}
    row = _connection(session).execute(_lock_and_read(), params).first()
    if row is None:
        raise NotFound(f"tenant {tenant_id} has no account")
    if row.state is None:
        return None
    return LockedReservation(row.state, row.period, row.amount_micros, row.tokens)


def tenant_of(session: Session, request_id: str) -> int | None:
    """The tenant of reservation ``request_id`` (which never changes), read without a lock."""
    statement = select(reservations.c.tenant_id).where(reservations.c.request_id == request_id)
    tenant_id: int | None = _connection(session).execute(statement).scalar()
    return tenant_id


def close(session: Session, closing: Closing, usage: dict[str, Any] | None = None) -> bool:
    """Lock the tenant's account, move the tenant's reservation ``closing.request_id`` from
    ``from_state`` to ``to_state``, insert the ``usage`` row if given, and move the amounts
    between the account's and the month's totals. False, and nothing written, when there is
    no such reservation in ``from_state`` holding ``min_tokens`` or more."""
    params: dict[str, Any] = {
        "request": closing.request_id,
        "tenant": closing.tenant_id,
        "from_state": closing.from_state,
        "to_state": closing.to_state,
        "min_tokens": closing.min_tokens,
        "now": closing.closed_at,
        "spent_micros": closing.spent_micros,
        "used_tokens": closing.used_tokens,
        "gives_back": closing.gives_back_hold,
    }
    if usage is not None:
        params.update({f"usage_{name}": value for name, value in usage.items()})
    connection = _connection(session)
    if connection.dialect.name == "postgresql":
        return bool(connection.execute(_close_postgres(usage is not None), params).scalar_one())
    change_state, *rest = _close_one_by_one(connection.dialect.name, usage is not None)
    closed = connection.execute(change_state, params).first()
    if closed is None:
        return False
    params["month"] = closed.period
    params["released_micros"] = closed.amount_micros if closing.gives_back_hold else 0
    params["released_tokens"] = closed.tokens if closing.gives_back_hold else 0
    for statement in rest:
        connection.execute(statement, params)
    return True


def _connection(session: Session) -> Connection:
    # Core statements on the session's connection: its transaction, no ORM bookkeeping.
    return session.connection()


# Statement builders. A ``gate`` is the CTE whose row must exist for a write to happen
# (PostgreSQL); None builds the write alone, for a caller that runs it after the gate (SQLite).


def _param(table: Table, column: str, name: str) -> BindParameter[Any]:
    return bindparam(name, type_=table.c[column].type)


def _exists(gate: Any) -> Exists:
    return select(literal_column("1")).select_from(gate).exists()


def _insert_row(table: Table, columns: tuple[str, ...], prefix: str, gate: Any) -> Any:
    params = [_param(table, column, f"{prefix}_{column}") for column in columns]
    if gate is None:
        return insert(table).values(dict(zip(columns, params, strict=True)))
    return insert(table).from_select(list(columns), select(*params).where(_exists(gate)))


@cache
def _lock_available() -> Select[Any]:
    available = accounts.c.credit_micros - accounts.c.spent_micros - accounts.c.reserved_micros
    return (
        select(available.label("available"))
        .where(accounts.c.tenant_id == bindparam("reservation_tenant_id"))
        .with_for_update()
    )


def _reserve_tokens(kind: str, with_quota: bool, source: Any = None, *, allowed: Any = None) -> Any:
    """The month's tokens_reserved += the reservation's tokens, within the quota; one row
    returned when it went through."""
    rows = select(
        _param(periods, "tenant_id", "reservation_tenant_id"),
        _param(periods, "period", "reservation_period"),
        literal_column("0"),
        _param(periods, "tokens_reserved", "reservation_tokens"),
    )
    if source is not None:
        rows = rows.select_from(source)
    # SQLite parses INSERT … SELECT … ON CONFLICT only with a WHERE before the ON CONFLICT.
    rows = rows.where(true() if allowed is None else allowed)
    statement = (postgresql.insert if kind == "postgresql" else sqlite.insert)(periods)
    statement = statement.from_select(
        ["tenant_id", "period", "tokens_used", "tokens_reserved"], rows
    )
    tokens = statement.excluded.tokens_reserved
    within_quota = periods.c.tokens_used + periods.c.tokens_reserved + tokens <= bindparam(
        "quota", type_=periods.c.tokens_reserved.type
    )
    return statement.on_conflict_do_update(
        index_elements=[periods.c.tenant_id, periods.c.period],
        set_={"tokens_reserved": periods.c.tokens_reserved + tokens},
        where=within_quota if with_quota else None,
    ).returning(periods.c.tenant_id)


def _hold_micros(gate: Any) -> Any:
    statement = (
        update(accounts)
        .where(accounts.c.tenant_id == _param(accounts, "tenant_id", "reservation_tenant_id"))
        .values(
            reserved_micros=accounts.c.reserved_micros
            + _param(accounts, "reserved_micros", "reservation_amount_micros"),
            updated_at=_param(accounts, "updated_at", "reservation_created_at"),
        )
    )
    return statement if gate is None else statement.where(_exists(gate))


@cache
def _hold_one_by_one(kind: str, with_quota: bool) -> tuple[Executable, ...]:
    return (
        _reserve_tokens(kind, with_quota),
        _hold_micros(None),
        _insert_row(reservations, RESERVATION_COLUMNS, "reservation", None),
    )


@cache
def _hold_postgres(check_credit: bool, fits_quota: bool, with_quota: bool) -> Executable:
    """Lock, check and write in one statement. The account CTE locks the row (FOR UPDATE
    returns its latest version, once the lock is ours); the counter upsert selects from it, so
    it runs after the lock is taken, and only when the credit suffices."""
    account = _lock_available().cte("account")
    allowed: ColumnElement[bool] = true() if fits_quota else false()
    if check_credit and fits_quota:
        allowed = account.c.available >= _param(
            accounts, "reserved_micros", "reservation_amount_micros"
        )
    counters = _reserve_tokens("postgresql", with_quota, account, allowed=allowed).cte("counters")
    totals = _hold_micros(counters).cte("totals")
    inserted = (
        _insert_row(reservations, RESERVATION_COLUMNS, "reservation", counters)
        .returning(reservations.c.request_id)
        .cte("inserted")
    )
    held = _exists(inserted).label("held")
    return select(account.c.available, held).add_cte(counters, totals, inserted)


@cache
def _lock_and_read() -> Select[Any]:
    reservation = and_(
        reservations.c.request_id == bindparam("request"),
        reservations.c.tenant_id == accounts.c.tenant_id,
    )
    return (
        select(
            accounts.c.tenant_id,
            reservations.c.state,
            reservations.c.period,
            reservations.c.amount_micros,
            reservations.c.tokens,
        )
        .select_from(accounts)
        .outerjoin(reservations, reservation)
        .where(accounts.c.tenant_id == bindparam("tenant"))
        .with_for_update(of=accounts)
    )


def _change_state(account: Any) -> Any:
    """The reservation's state change; its amount, tokens and month returned when it applied.
    ``account`` is the locked account CTE (PostgreSQL) or None (SQLite)."""
    tenant = bindparam("tenant") if account is None else account.c.tenant_id
    return (
        update(reservations)
        .where(
            reservations.c.request_id == bindparam("request"),
            reservations.c.tenant_id == tenant,
            reservations.c.state == bindparam("from_state"),
            reservations.c.tokens >= _param(reservations, "tokens", "min_tokens"),
        )
        .values(state=bindparam("to_state"), closed_at=_param(reservations, "closed_at", "now"))
        .returning(
            reservations.c.tenant_id,
            reservations.c.amount_micros,
            reservations.c.tokens,
            reservations.c.period,
        )
    )


def _move_micros(tenant: Any, released: Any) -> Any:
    """The account's spent_micros += spent, reserved_micros -= ``released``."""
    return (
        update(accounts)
        .where(accounts.c.tenant_id == tenant)
        .values(
            spent_micros=accounts.c.spent_micros + _param(accounts, "spent_micros", "spent_micros"),
            reserved_micros=accounts.c.reserved_micros - released,
            updated_at=_param(accounts, "updated_at", "now"),
        )
    )


def _move_tokens(kind: str, month: Any, released: Any, source: Any) -> Any:
    """The month's tokens_used += used, tokens_reserved -= ``released`` (the row created if
    missing, as a hold would have)."""
    rows = select(
        _param(periods, "tenant_id", "tenant"),
        month,
        _param(periods, "tokens_used", "used_tokens"),
        -released,
    )
    # SQLite parses INSERT … SELECT … ON CONFLICT only with a WHERE before the ON CONFLICT.
    rows = rows.where(true()) if source is None else rows.select_from(source)
    statement = (postgresql.insert if kind == "postgresql" else sqlite.insert)(periods)
    statement = statement.from_select(
        ["tenant_id", "period", "tokens_used", "tokens_reserved"], rows
    )
    return statement.on_conflict_do_update(
        index_elements=[periods.c.tenant_id, periods.c.period],
        set_={
            "tokens_used": periods.c.tokens_used + statement.excluded.tokens_used,
            "tokens_reserved": periods.c.tokens_reserved + statement.excluded.tokens_reserved,
        },
    )


@cache
def _close_one_by_one(kind: str, with_usage: bool) -> tuple[Executable, ...]:
    usage = (_insert_row(usage_events, USAGE_COLUMNS, "usage", None),) if with_usage else ()
    return (
        _change_state(None),
        *usage,
        _move_micros(bindparam("tenant"), _param(accounts, "reserved_micros", "released_micros")),
        _move_tokens(
            kind,
            _param(periods, "period", "month"),
            _param(periods, "tokens_reserved", "released_tokens"),
            None,
        ),
    )


@cache
def _close_postgres(with_usage: bool) -> Executable:
    """Lock, change the state and write in one statement; every write selects from the state
    change, so none happens without it. The state change joins the locked account CTE, so it
    runs once the lock is ours, and re-checks the state on the row's latest version."""
    account = (
        select(accounts.c.tenant_id)
        .where(accounts.c.tenant_id == bindparam("tenant"))
        .with_for_update()
        .cte("account")
    )
    closed = _change_state(account).cte("closed")
    gives_back = bindparam("gives_back", type_=Boolean)
    released_micros = case((gives_back, closed.c.amount_micros), else_=literal_column("0"))
    released_tokens = case((gives_back, closed.c.tokens), else_=literal_column("0"))
    writes = [
        _move_micros(closed.c.tenant_id, released_micros).cte("totals"),
        _move_tokens("postgresql", closed.c.period, released_tokens, closed).cte("counters"),
    ]
    if with_usage:
        writes.insert(0, _insert_row(usage_events, USAGE_COLUMNS, "usage", closed).cte("usage"))
    return select(_exists(closed)).add_cte(*writes)

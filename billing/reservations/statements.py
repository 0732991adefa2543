"""The SQL of a reservation's transitions, built once with SQLAlchemy Core.

Each transition takes the tenant's account lock first (FOR UPDATE on PostgreSQL; on SQLite the
transaction's BEGIN IMMEDIATE holds the database's write lock already) and gates its writes on
one of them, the month's token counter for a hold and the state change for a close: when that
one does not apply, nothing is written. On PostgreSQL a transition is one statement, the lock
and the writes being CTEs, each write selecting from its gate; SQLite has no writable CTEs and
runs the same writes one by one (``sqlite_*`` builders).

Statements are built once (``functools.cache``) and run with bound parameters, so Python does
not rebuild them and psycopg prepares each on the server after a few runs. Parameters are named
apart from the columns they fill (``tenant``, ``reservation_tenant_id``): SQLAlchemy reserves a
column's own name for the values of an INSERT or UPDATE of its table.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    Boolean,
    ColumnElement,
    Executable,
    Exists,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    case,
    false,
    insert,
    literal_column,
    null,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel

from billing.models import (
    IdempotencyRecord,
    Reservation,
    TenantAccount,
    TenantPeriod,
    UsageEvent,
)


def table_of(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


reservations = table_of(Reservation)
accounts = table_of(TenantAccount)
periods = table_of(TenantPeriod)
usage_events = table_of(UsageEvent)
idempotency_records = table_of(IdempotencyRecord)

# The columns a hold and a settlement insert (closed_at and the usage row's id stay unset).
RESERVATION_COLUMNS = tuple(c.name for c in reservations.columns if c.name != "closed_at")
USAGE_COLUMNS = tuple(c.name for c in usage_events.columns if c.name != "id")


def param(table: Table, column: str, name: str) -> BindParameter[Any]:
    return bindparam(name, type_=table.c[column].type)


def exists_in(gate: Any) -> Exists:
    return select(literal_column("1")).select_from(gate).exists()


def insert_row(table: Table, columns: tuple[str, ...], prefix: str, gate: Any) -> Any:
    """INSERT of one row from ``{prefix}_{column}`` parameters; with a ``gate`` CTE, only when
    the gate has a row."""
    params = [param(table, column, f"{prefix}_{column}") for column in columns]
    if gate is None:
        return insert(table).values(dict(zip(columns, params, strict=True)))
    return insert(table).from_select(list(columns), select(*params).where(exists_in(gate)))


def _upsert(kind: str) -> Any:
    return (postgresql.insert if kind == "postgresql" else sqlite.insert)(periods)


# --- holds ------------------------------------------------------------------------------------


@cache
def lock_available() -> Select[Any]:
    """Lock the tenant's account row; read credit - spent - reserved."""
    available = accounts.c.credit_micros - accounts.c.spent_micros - accounts.c.reserved_micros
    return (
        select(available.label("available"))
        .where(accounts.c.tenant_id == bindparam("reservation_tenant_id"))
        .with_for_update()
    )


def add_month_tokens(
    kind: str,
    column: str,
    names: tuple[str, str, str],
    with_quota: bool,
    source: Any = None,
    *,
    allowed: Any = None,
) -> Any:
    """The month's ``column`` (tokens_reserved or tokens_used) += tokens, within the quota; one
    row returned when it went through. ``names``: the parameters of the tenant, the month and
    the tokens; the month's first write creates its row."""
    tenant, month, tokens_name = names
    added = param(periods, column, tokens_name)
    rows = select(
        param(periods, "tenant_id", tenant),
        param(periods, "period", month),
        added if column == "tokens_used" else literal_column("0"),
        added if column == "tokens_reserved" else literal_column("0"),
    )
    if source is not None:
        rows = rows.select_from(source)
    # SQLite parses INSERT … SELECT … ON CONFLICT only with a WHERE before the ON CONFLICT.
    rows = rows.where(true() if allowed is None else allowed)
    statement = _upsert(kind).from_select(
        ["tenant_id", "period", "tokens_used", "tokens_reserved"], rows
    )
    tokens = statement.excluded[column]
    within_quota = periods.c.tokens_used + periods.c.tokens_reserved + tokens <= bindparam(
        "quota", type_=periods.c[column].type
    )
    return statement.on_conflict_do_update(
        index_elements=[periods.c.tenant_id, periods.c.period],
        set_={column: periods.c[column] + tokens},
        where=within_quota if with_quota else None,
    ).returning(periods.c.tenant_id)


def reserve_tokens(kind: str, with_quota: bool, source: Any = None, *, allowed: Any = None) -> Any:
    """The month's tokens_reserved += the reservation's tokens, within the quota."""
    names = ("reservation_tenant_id", "reservation_period", "reservation_tokens")
    return add_month_tokens(kind, "tokens_reserved", names, with_quota, source, allowed=allowed)


def hold_micros(gate: Any) -> Any:
    statement = (
        update(accounts)
        .where(accounts.c.tenant_id == param(accounts, "tenant_id", "reservation_tenant_id"))
        .values(
            reserved_micros=accounts.c.reserved_micros
            + param(accounts, "reserved_micros", "reservation_amount_micros"),
            updated_at=param(accounts, "updated_at", "reservation_created_at"),
        )
    )
    return statement if gate is None else statement.where(exists_in(gate))


@cache
def sqlite_hold(kind: str, with_quota: bool) -> tuple[Executable, ...]:
    """The writes of a hold, run one by one after ``lock_available`` and the credit check."""
    return (
        reserve_tokens(kind, with_quota),
        hold_micros(None),
        insert_row(reservations, RESERVATION_COLUMNS, "reservation", None),
    )


@cache
def postgres_hold(check_credit: bool, fits_quota: bool, with_quota: bool) -> Executable:
    """Lock, check and write in one statement. The account CTE locks the row (FOR UPDATE
    returns its latest version, once the lock is ours); the counter upsert selects from it, so
    it runs after the lock is taken, and only when the credit suffices."""
    account = lock_available().cte("account")
    allowed: ColumnElement[bool] = true() if fits_quota else false()
    if check_credit and fits_quota:
        allowed = account.c.available >= param(
            accounts, "reserved_micros", "reservation_amount_micros"
        )
    counters = reserve_tokens("postgresql", with_quota, account, allowed=allowed).cte("counters")
    totals = hold_micros(counters).cte("totals")
    inserted = (
        insert_row(reservations, RESERVATION_COLUMNS, "reservation", counters)
        .returning(reservations.c.request_id)
        .cte("inserted")
    )
    held = exists_in(inserted).label("held")
    return select(account.c.available, held).add_cte(counters, totals, inserted)


@cache
def state_of() -> Select[Any]:
    """A reservation's state (read after its tenant's account lock, it is current)."""
    return select(reservations.c.state).where(
        reservations.c.request_id == bindparam("reservation_request_id"),
        reservations.c.tenant_id == bindparam("reservation_tenant_id"),
    )


@cache
def reopen_released() -> Executable:
    """A released reservation held again, for the same request, with the amounts given."""
    return (
        update(reservations)
        .where(
            reservations.c.request_id == bindparam("reservation_request_id"),
            reservations.c.state == "released",
        )
        .values(
            state="open",
            period=param(reservations, "period", "reservation_period"),
            amount_micros=param(reservations, "amount_micros", "reservation_amount_micros"),
            tokens=param(reservations, "tokens", "reservation_tokens"),
            api_key_id=param(reservations, "api_key_id", "reservation_api_key_id"),
            created_at=param(reservations, "created_at", "reservation_created_at"),
            expires_at=param(reservations, "expires_at", "reservation_expires_at"),
            closed_at=null(),
        )
    )


@cache
def renew_expiry() -> Executable:
    """A live request pushes its open reservation's expiry on, so the sweeper leaves it be."""
    return (
        update(reservations)
        .where(
            reservations.c.request_id == bindparam("request"),
            reservations.c.state == "open",
        )
        .values(expires_at=param(reservations, "expires_at", "expires_at"))
        .returning(reservations.c.request_id)
    )


@cache
def tokens_held() -> Select[Any]:
    return select(periods.c.tokens_used + periods.c.tokens_reserved).where(
        periods.c.tenant_id == bindparam("tenant"), periods.c.period == bindparam("period")
    )


@cache
def usage_row_of() -> Select[Any]:
    return select(usage_events).where(usage_events.c.request_id == bindparam("request"))


@cache
def stored_result() -> Select[Any]:
    """The result a settlement stored on its Idempotency-Key."""
    return select(idempotency_records.c.result).where(
        idempotency_records.c.tenant_id == bindparam("tenant"),
        idempotency_records.c.key == bindparam("record_key"),
    )


@cache
def tenant_of() -> Select[Any]:
    return select(reservations.c.tenant_id).where(reservations.c.request_id == bindparam("request"))


# --- closes -----------------------------------------------------------------------------------


@cache
def lock_and_read() -> Select[Any]:
    """Lock the tenant's account; read its available credit and reservation ``request``
    (absent: NULLs)."""
    reservation = and_(
        reservations.c.request_id == bindparam("request"),
        reservations.c.tenant_id == accounts.c.tenant_id,
    )
    available = accounts.c.credit_micros - accounts.c.spent_micros - accounts.c.reserved_micros
    return (
        select(
            accounts.c.tenant_id,
            available.label("available"),
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


@cache
def lock_month_tokens() -> Select[Any]:
    """The month's tokens used and reserved, its counter row locked. A statement of its own,
    run once the account lock is held: on PostgreSQL (READ COMMITTED) it reads what every
    transaction before it committed, where a subquery of the statement that waited for the
    account lock would read the month as it was before the wait. The row lock keeps the
    writers that take no account lock (free cache hits) out until the decision is written."""
    return (
        select(periods.c.tokens_used + periods.c.tokens_reserved)
        .where(periods.c.tenant_id == bindparam("tenant"), periods.c.period == bindparam("period"))
        .with_for_update()
    )


def change_state(account: Any) -> Any:
    """The reservation's state change; its amount, tokens and month returned when it applied.
    ``account`` is the locked account CTE (PostgreSQL) or None (SQLite)."""
    tenant = bindparam("tenant") if account is None else account.c.tenant_id
    return (
        update(reservations)
        .where(
            reservations.c.request_id == bindparam("request"),
            reservations.c.tenant_id == tenant,
            reservations.c.state == bindparam("from_state"),
            reservations.c.tokens >= param(reservations, "tokens", "min_tokens"),
        )
        .values(state=bindparam("to_state"), closed_at=param(reservations, "closed_at", "now"))
        .returning(
            reservations.c.tenant_id,
            reservations.c.amount_micros,
            reservations.c.tokens,
            reservations.c.period,
        )
    )


def move_micros(tenant: Any, released: Any) -> Any:
    """The account's spent_micros += spent, reserved_micros -= ``released``."""
    return (
        update(accounts)
        .where(accounts.c.tenant_id == tenant)
        .values(
            spent_micros=accounts.c.spent_micros + param(accounts, "spent_micros", "spent_micros"),
            reserved_micros=accounts.c.reserved_micros - released,
            updated_at=param(accounts, "updated_at", "now"),
        )
    )


def move_tokens(kind: str, month: Any, released: Any, source: Any) -> Any:
    """The month's tokens_used += used, tokens_reserved -= ``released`` (the row created if
    missing, as a hold would have)."""
    rows = select(
        param(periods, "tenant_id", "tenant"),
        month,
        param(periods, "tokens_used", "used_tokens"),
        -released,
    )
    # SQLite parses INSERT … SELECT … ON CONFLICT only with a WHERE before the ON CONFLICT.
    rows = rows.where(true()) if source is None else rows.select_from(source)
    statement = _upsert(kind).from_select(
        ["tenant_id", "period", "tokens_used", "tokens_reserved"], rows
    )
    return statement.on_conflict_do_update(
        index_elements=[periods.c.tenant_id, periods.c.period],
        set_={
            "tokens_used": periods.c.tokens_used + statement.excluded.tokens_used,
            "tokens_reserved": periods.c.tokens_reserved + statement.excluded.tokens_reserved,
        },
    )


def complete_key(gate: Any) -> Any:
    """The request's Idempotency-Key completed with its result, in the settling statement."""
    statement = (
        update(idempotency_records)
        .where(
            idempotency_records.c.tenant_id == bindparam("tenant"),
            idempotency_records.c.key == bindparam("idempotency_key"),
            idempotency_records.c.request_id == bindparam("request"),
        )
        .values(
            state="completed",
            result=bindparam("idempotency_result", type_=Text()),
            completed_at=param(idempotency_records, "completed_at", "now"),
            lease_token=null(),
            lease_expires_at=null(),
        )
    )
    return statement if gate is None else statement.where(exists_in(gate))


@cache
def sqlite_close(kind: str, with_usage: bool, with_key: bool) -> tuple[Executable, ...]:
    """The close's state change, then its writes one by one (run only when it applied)."""
    usage: tuple[Executable, ...] = ()
    if with_usage:
        usage = (insert_row(usage_events, USAGE_COLUMNS, "usage", None),)
    return (
        change_state(None),
        *usage,
        *((complete_key(None),) if with_key else ()),
        move_micros(bindparam("tenant"), param(accounts, "reserved_micros", "released_micros")),
        move_tokens(
            kind,
            param(periods, "period", "month"),
            param(periods, "tokens_reserved", "released_tokens"),
            None,
        ),
    )


@cache
def postgres_close(with_usage: bool, with_key: bool) -> Executable:
    """Lock, change the state and write in one statement; every write selects from the state
    change, so none happens without it. The state change joins the locked account CTE, so it
    runs once the lock is ours, and re-checks the state on the row's latest version."""
    account = (
        select(accounts.c.tenant_id)
        .where(accounts.c.tenant_id == bindparam("tenant"))
        .with_for_update()
        .cte("account")
    )
    closed = change_state(account).cte("closed")
    releases = bindparam("releases_hold", type_=Boolean)
    released_micros = case((releases, closed.c.amount_micros), else_=literal_column("0"))
    released_tokens = case((releases, closed.c.tokens), else_=literal_column("0"))
    writes = [
        move_micros(closed.c.tenant_id, released_micros).cte("totals"),
        move_tokens("postgresql", closed.c.period, released_tokens, closed).cte("counters"),
    ]
    if with_usage:
        writes.insert(0, insert_row(usage_events, USAGE_COLUMNS, "usage", closed).cte("usage"))
    if with_key:
        writes.append(complete_key(closed).cte("completed"))
    return select(exists_in(closed)).add_cte(*writes)


# --- cache hits: charged in one statement, with no reservation ---------------------------------


def charge_tokens(kind: str, with_quota: bool, source: Any = None, *, allowed: Any = None) -> Any:
    """The month's tokens_used += the hit's tokens, within the quota."""
    names = ("tenant", "month", "used_tokens")
    return add_month_tokens(kind, "tokens_used", names, with_quota, source, allowed=allowed)


def spend_micros(gate: Any) -> Any:
    statement = (
        update(accounts)
        .where(accounts.c.tenant_id == bindparam("tenant"))
        .values(
            spent_micros=accounts.c.spent_micros + param(accounts, "spent_micros", "spent_micros"),
            updated_at=param(accounts, "updated_at", "now"),
        )
    )
    return statement if gate is None else statement.where(exists_in(gate))


@cache
def lock_account_available() -> Select[Any]:
    available = accounts.c.credit_micros - accounts.c.spent_micros - accounts.c.reserved_micros
    return (
        select(available.label("available"))
        .where(accounts.c.tenant_id == bindparam("tenant"))
        .with_for_update()
    )


@cache
def sqlite_charge_hit(
    kind: str, with_quota: bool, paid: bool, with_key: bool
) -> tuple[Executable, ...]:
    """A hit's writes after ``lock_account_available`` and the credit check: the counter (its
    gate), then the rows and totals."""
    return (
        charge_tokens(kind, with_quota),
        insert_row(usage_events, USAGE_COLUMNS, "usage", None),
        *((spend_micros(None),) if paid else ()),
        *((complete_key(None),) if with_key else ()),
    )


@cache
def postgres_charge_hit(
    check_credit: bool, fits_quota: bool, with_quota: bool, paid: bool, with_key: bool
) -> Executable:
    """Check and charge a cache hit in one statement. A free hit takes no account lock: only
    the month's counter row (for the quota) and its rows. A paid one on a prepaid account
    locks the account first and charges only what its available credit covers."""
    account = None
    allowed: ColumnElement[bool] = true() if fits_quota else false()
    if check_credit:
        account = lock_account_available().cte("account")
        if fits_quota:
            allowed = account.c.available >= param(accounts, "spent_micros", "spent_micros")
    counters = charge_tokens("postgresql", with_quota, account, allowed=allowed).cte("counters")
    writes = [insert_row(usage_events, USAGE_COLUMNS, "usage", counters).cte("usage")]
    if paid:
        writes.append(spend_micros(counters).cte("totals"))
    if with_key:
        writes.append(complete_key(counters).cte("completed"))
    charged = exists_in(counters).label("charged")
    if account is None:
        return select(charged).add_cte(counters, *writes)
    return select(account.c.available, charged).add_cte(counters, *writes)

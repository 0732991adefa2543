"""PostgreSQL on the event loop: ``billing.statements`` transitions on psycopg's asyncio API.

The request path's ledger transitions (hold, settle, release, idempotency claims) are single
statements on PostgreSQL, so each runs in autocommit: one round trip, no BEGIN or COMMIT, and
no worker thread. A transition of several statements runs inside a transaction.

SQLAlchemy Core builds the statements (the same objects the blocking path runs); each is
compiled once per process to SQL text with named placeholders, and its parameters go through
the column types' own bind processors, so both paths write identical values. psycopg prepares
a statement on the server after a few runs on a connection.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Executable
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url

from billing.errors import LedgerUnavailable
from billing.statements import Fetch, Steps

T = TypeVar("T")

# A pooled connection idle longer than this is pinged before use (as billing.db does).
PING_AFTER_IDLE_SECONDS = 10.0


def is_postgres(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "postgresql"


def conninfo(database_url: str) -> str:
    """libpq's URI for a SQLAlchemy ``postgresql+psycopg://`` URL (query options kept)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    processors: Mapping[str, Any]
    compiled: Any

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values = self.compiled.construct_params(params)
        for name, process in self.processors.items():
            if name in values:
                values[name] = process(values[name])
        return dict(values)


class AsyncLedger:
    """A pool of asyncio connections to the ledger's PostgreSQL."""

    def __init__(self, database_url: str, *, pool_size: int = 16) -> None:
        self._dialect = PGDialect_psycopg()  # type: ignore[no-untyped-call]
        self._compiled: dict[int, tuple[Executable, _Compiled]] = {}
        self._last_used: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo(database_url),
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "row_factory": namedtuple_row},
            check=self._ping_if_idle,
            open=False,
        )

    async def open(self) -> None:
        await self.pool.open()

    async def aclose(self) -> None:
        await self.pool.close()

    async def run(self, steps: Steps[T], *, atomic: bool = False) -> T:
        """Drive ``steps``: in autocommit (each step its own transaction: right for a
        transition of one statement), or in one transaction when ``atomic``."""
        try:
            async with self.pool.connection() as connection:
                try:
                    if atomic:
                        async with connection.transaction():
                            return await self._drive(connection, steps)
                    return await self._drive(connection, steps)
                finally:
                    self._last_used[connection] = time.monotonic()
        except psycopg.OperationalError as error:
            raise LedgerUnavailable(f"the ledger database is unreachable: {error}") from error

    async def _drive(self, connection: Any, steps: Steps[T]) -> T:
        try:
            step = next(steps)
            while True:
                compiled = self._compile(step.statement)
                cursor = await connection.execute(compiled.sql, compiled.bind(step.params))
                received: Any = None
                if step.fetch is Fetch.first:
                    received = await cursor.fetchone()
                elif step.fetch is Fetch.scalar:
                    row = await cursor.fetchone()
                    received = None if row is None else row[0]
                elif step.fetch is Fetch.all:
                    received = await cursor.fetchall()
                step = steps.send(received)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _compile(self, statement: Executable) -> _Compiled:
        # Statements are built once (functools.cache) and live as long as the process, so their
        # identity keys the cache; the statement is kept with it so the id is never reused.
        found = self._compiled.get(id(statement))
        if found is not None and found[0] is statement:
            return found[1]
        compiled = statement.compile(dialect=self._dialect)  # type: ignore[attr-defined]
        entry = _Compiled(compiled.string, dict(compiled._bind_processors), compiled)
        self._compiled[id(statement)] = (statement, entry)
        return entry

    async def _ping_if_idle(self, connection: Any) -> None:
        last_used = self._last_used.get(connection)
        if last_used is not None and time.monotonic() - last_used < PING_AFTER_IDLE_SECONDS:
            return
        # Raising makes the pool discard this connection and hand out another one.
        await AsyncConnectionPool.check_connection(connection)

"""Engine and transactions of the ledger database."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlmodel import Session

# Idle connections kept open per process. Requests run their ledger transactions on worker
# threads; past this many at once, the pool opens extra connections and closes each one it gets
# back while it holds this many idle, so the next burst starts new PostgreSQL backends.
POOL_SIZE = 16
# A pooled connection idle longer than this is pinged before use (a server restart or an idle
# timeout on the way may have closed it); one in steady use is not, saving a round trip.
PING_AFTER_IDLE_SECONDS = 10.0


def create_db_engine(
    database_url: str,
    *,
    echo: bool = False,
    pool_size: int = POOL_SIZE,
    sqlite_busy_timeout_seconds: float = 30.0,
) -> Engine:
    """An engine for ``database_url``; an SQLite file's folder is created on demand."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        in_memory = not url.database or url.database == ":memory:"
        if not in_memory:
            Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": sqlite_busy_timeout_seconds},
            **({} if in_memory else {"pool_size": pool_size}),
        )
        busy_ms = round(sqlite_busy_timeout_seconds * 1000)

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            _configure_sqlite(dbapi_connection, busy_ms)

        event.listen(engine, "begin", _begin_immediate)
        return engine
    engine = create_engine(url, echo=echo, pool_size=pool_size)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Like ``pool_pre_ping``, for connections that sat idle in the pool only."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool opens a new connection in its place and checks that one out.
            raise DisconnectionError(f"idle connection is gone: {error}") from error


def _configure_sqlite(dbapi_connection: Any, busy_timeout_ms: int) -> None:
    # The driver's own implicit BEGIN is replaced by _begin_immediate.
    dbapi_connection.isolation_level = None
    # WAL lets the CLI read usage while the gateway writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # A writer waits this long for another's lock, then gets "database is locked".
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # SQLite has no row locks: taking the write lock when the transaction starts serializes
    # reservations (read balance, then write) the way FOR UPDATE does on PostgreSQL.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Owns the engine; hands out one session per unit of work."""

    def __init__(
        self,
        database_url: str,
        *,
        echo: bool = False,
        pool_size: int = POOL_SIZE,
        sqlite_busy_timeout_seconds: float = 30.0,
    ) -> None:
        self.url = database_url
        self.engine = create_db_engine(
            database_url,
            echo=echo,
            pool_size=pool_size,
            sqlite_busy_timeout_seconds=sqlite_busy_timeout_seconds,
        )
        # SQLite has one writer at a time, and every transaction here begins IMMEDIATE. This
        # process's threads take turns on a lock instead of meeting in SQLite's busy handler,
        # whose sleeps grow to 100 ms a try and let later arrivals overtake a waiter (a tail of
        # seconds under concurrent requests). Other processes (the CLI) still meet the busy
        # timeout. Reentrant: a transaction opened inside another on the same thread behaves
        # as it did without the lock.
        self._sqlite = self.engine.dialect.name == "sqlite"
        self._turn = threading.RLock()
        self._turn_timeout = sqlite_busy_timeout_seconds
        self._waiting = 0
        self._waiting_lock = threading.Lock()

    @property
    def writers_waiting(self) -> int:
        """Threads of this process waiting for their turn at an SQLite ledger."""
        return self._waiting

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits when the block succeeds and rolls back when it raises."""
        with self._writer_turn(), Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        if not self._sqlite:
            yield
            return
        with self._waiting_lock:
            self._waiting += 1
        try:
            turn = self._turn.acquire(timeout=self._turn_timeout)
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        if not turn:
            # What SQLite itself answers when the busy timeout runs out.
            raise OperationalError(
                "BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")
            )
        try:
            yield
        finally:
            self._turn.release()

    def dispose(self) -> None:
        self.engine.dispose()

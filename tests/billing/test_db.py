"""The ledger engine: its connection pool (PostgreSQL), and writers taking turns (SQLite)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

import billing.db
from billing.db import Database


@pytest.mark.postgres
def test_a_connection_that_died_while_idle_is_replaced(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database(postgres_url, pool_size=1)
    try:
        with database.transaction() as session:
            first = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = create_engine(postgres_url)
        with admin.connect() as connection:
            # Waits up to 5 s for the backend to be gone.
            connection.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": first})
        admin.dispose()
        # Idle for longer than the threshold: checked before use, and replaced.
        monkeypatch.setattr(billing.db, "PING_AFTER_IDLE_SECONDS", 0.0)
        with database.transaction() as session:
            second = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second != first
    finally:
        database.dispose()


def wait_until(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class TestSqliteWriters:
    """A process's SQLite transactions wait for their turn on a lock, not in SQLite's busy
    handler: a second writer queues behind the first and runs once it commits."""

    def test_a_second_writer_waits_its_turn_and_then_writes(self, tmp_path: Path) -> None:
        database = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
        try:
            with database.transaction() as session:
                session.execute(text("CREATE TABLE counts (n INTEGER)"))
            outcome: list[object] = []

            def second_writer() -> None:
                try:
                    with database.transaction() as session:
                        session.execute(text("INSERT INTO counts VALUES (2)"))
                    outcome.append("written")
                except Exception as error:  # reported to the test below
                    outcome.append(error)

            with database.transaction() as session:
                session.execute(text("INSERT INTO counts VALUES (1)"))  # holds the write lock
                writer = threading.Thread(target=second_writer)
                writer.start()
                # Queued on the process's lock: not inside SQLite, holding no connection.
                wait_until(lambda: database.writers_waiting == 1)
                assert outcome == []
            writer.join(timeout=30)
            assert outcome == ["written"]
            assert database.writers_waiting == 0
            with database.transaction() as session:
                rows = session.execute(text("SELECT n FROM counts ORDER BY n")).scalars().all()
            assert rows == [1, 2]
        finally:
            database.dispose()

    def test_a_turn_not_given_within_the_busy_timeout_is_database_is_locked(
        self, tmp_path: Path
    ) -> None:
        database = Database(f"sqlite:///{tmp_path / 'ledger.db'}", sqlite_busy_timeout_seconds=0)
        try:
            errors: list[BaseException] = []

            def impatient_writer() -> None:
                try:
                    with database.transaction() as session:
                        session.execute(text("SELECT 1"))
                except OperationalError as error:
                    errors.append(error)

            with database.transaction():
                writer = threading.Thread(target=impatient_writer)
                writer.start()
                writer.join(timeout=30)
            assert len(errors) == 1
            assert "database is locked" in str(errors[0])
            assert database.writers_waiting == 0
        finally:
            database.dispose()

    def test_a_transaction_opened_inside_another_on_one_thread_is_not_held_up(
        self, tmp_path: Path
    ) -> None:
        database = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
        try:
            with database.transaction(), database.transaction() as inner:
                assert inner.execute(text("SELECT 1")).scalar_one() == 1
        finally:
            database.dispose()

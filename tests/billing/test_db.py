"""The ledger engine's connection pool (PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

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

"""Console tests run on SQLite; the queries that differ on PostgreSQL (the guarded UPDATEs of
sessions and portal links) are driven there by test_console_postgres.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url

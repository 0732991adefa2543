from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import billing.models  # noqa: F401  (registers the tables)
from billing.db import create_db_engine
from billing.migrate import downgrade_to_base, upgrade_to_head

TABLES = {
    "plans",
    "tenants",
    "api_keys",
    "usage_events",
    "admin_users",
    "console_sessions",
    "portal_links",
    "client_secrets",
}


class TestMigrations:
    def test_upgrade_then_downgrade(self, database_url: str) -> None:
        engine = create_db_engine(database_url)
        try:
            upgrade_to_head(database_url)
            assert TABLES <= set(inspect(engine).get_table_names())
            downgrade_to_base(database_url)
            assert not TABLES & set(inspect(engine).get_table_names())
            upgrade_to_head(database_url)  # and back up again: the history is repeatable
            assert TABLES <= set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    def test_head_matches_the_models(self, database_url: str) -> None:
        upgrade_to_head(database_url)
        engine = create_db_engine(database_url)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"compare_type": True})
                differences = compare_metadata(context, SQLModel.metadata)
        finally:
            engine.dispose()
        assert differences == []

"""``asrgw migrate``: what a deploy job (the Helm chart's migrations hook) runs before gateways
start with GATEWAY_MIGRATE_ON_START=false."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import inspect, text

from billing.db import create_db_engine
from billing.migrate import alembic_config
from gateway.cli.main import cli

LEDGER_TABLES = {"plans", "tenants", "api_keys", "usage_events", "pool_nodes", "jobs"}


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def migrate(database_url: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["migrate"], env={"BILLING_DATABASE_URL": database_url})
    return result.exit_code, result.output


class TestMigrate:
    def test_an_empty_database_is_brought_to_head_and_a_second_run_changes_nothing(
        self, database_url: str
    ) -> None:
        code, output = migrate(database_url)
        assert code == 0, output
        assert f"migrated from an empty database to {head_revision()}" in output
        engine = create_db_engine(database_url)
        try:
            assert LEDGER_TABLES <= set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

        code, output = migrate(database_url)
        assert code == 0, output
        assert f"already at the latest migration, {head_revision()}" in output

    def test_an_unreachable_database_fails_without_showing_its_password(self) -> None:
        code, output = migrate("postgresql+psycopg://asrgw:s3cret-pw@127.0.0.1:1/ledger")
        assert code == 1
        assert "could not migrate the ledger database" in output
        assert "postgresql+psycopg://asrgw:***@127.0.0.1:1/ledger" in output
        assert "s3cret-pw" not in output

    def test_a_database_migrated_by_a_newer_release_is_refused(self, database_url: str) -> None:
        assert migrate(database_url)[0] == 0
        engine = create_db_engine(database_url)
        try:
            with engine.begin() as connection:
                connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        finally:
            engine.dispose()
        code, output = migrate(database_url)
        assert code == 1
        assert "is at revision 9999, which this release does not know" in output

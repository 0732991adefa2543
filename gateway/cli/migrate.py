"""``asrgw migrate``: bring the ledger database to the latest migration, once, before gateways
start (a deploy job or a Kubernetes hook), so replicas never race to do it."""

from __future__ import annotations

import click
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from billing.config import BillingSettings
from billing.db import create_db_engine
from billing.migrate import alembic_config, upgrade_to_head


def current_revision(database_url: str) -> str | None:
    """The revision the database is at; None before the first migration."""
    engine = create_db_engine(database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


@click.command()
def migrate() -> None:
    """Apply the ledger migrations to BILLING_DATABASE_URL (alembic upgrade head).

    Run it once per release before the gateways start, and start those with
    GATEWAY_MIGRATE_ON_START=false. Exits 1 when the database cannot be migrated.
    """
    database_url = BillingSettings().database_url
    # The URL may carry a password; logs of a deploy job are read by many.
    shown = make_url(database_url).render_as_string(hide_password=True)
    scripts = ScriptDirectory.from_config(alembic_config(database_url))
    head = scripts.get_current_head()
    try:
        before = current_revision(database_url)
        if before == head:
            click.echo(f"ledger database {shown} is already at the latest migration, {head}")
            return
        known = {script.revision for script in scripts.walk_revisions()}
        if before is not None and before not in known:
            # A rollback to an older release: its code must not run on a schema it never saw.
            raise click.ClickException(
                f"ledger database {shown} is at revision {before}, which this release does not "
                f"know (its latest is {head}): it was migrated by a newer release"
            )
        upgrade_to_head(database_url)
        after = current_revision(database_url)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise click.ClickException(
            f"could not migrate the ledger database {shown}: {reason}"
        ) from None
    click.echo(f"ledger database {shown} migrated from {before or 'an empty database'} to {after}")

"""The console's own queries on PostgreSQL: sessions read, touched and revoked; portal links
claimed once; admin users managed from the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from click.testing import CliRunner

from billing.db import Database
from billing.migrate import upgrade_to_head
from gateway.cli.main import cli
from gateway.console.portal_links.service import create_portal_link, redeem_portal_link
from gateway.console.sessions.service import read_session, start_session
from gateway.console.users.service import check_password
from tests.fixtures.factories import TEST_ACTOR, create_tenant_with_key
from tests.gateway.console.client import (
    HTML,
    PASSWORD,
    add_user,
    console_client,
    console_settings,
    sign_in,
    signed_in_token,
)
from tests.gateway.console.test_console_account import SESSIONS, as_browser, browser, listed
from tests.gateway.console.test_console_reauth import signed_in_long_ago

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[Database]:
    upgrade_to_head(postgres_url)
    database = Database(postgres_url)
    yield database
    database.dispose()


def test_users_from_the_cli_sign_in_and_their_sessions_end_with_a_new_password(
    pg_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_DATABASE_URL", pg_database.url)
    runner = CliRunner()
    first = "first password here"
    created = runner.invoke(
        cli, ["admin", "user", "create", "fiona", "--role", "finance"], input=f"{first}\n{first}\n"
    )
    short = runner.invoke(cli, ["admin", "user", "create", "sam"], input="short\nshort\n")
    twice = runner.invoke(cli, ["admin", "user", "create", "fiona"], input=f"{first}\n{first}\n")
    listed = runner.invoke(cli, ["admin", "user", "list"])
    assert created.exit_code == 0, created.output
    assert "admin user fiona created (finance)" in created.output
    assert short.exit_code == 1
    assert "at least 12 characters" in short.output
    assert twice.exit_code == 1
    assert "exists already" in twice.output
    assert "fiona" in listed.output
    assert "finance" in listed.output
    with console_client(pg_database, console_settings()) as client:
        assert sign_in(client, "fiona", first).status_code == 303
        assert client.get("/console/audit", headers=HTML).status_code == 200
        second = "second password here"
        changed = runner.invoke(
            cli, ["admin", "user", "set-password", "fiona"], input=f"{second}\n{second}\n"
        )
        ended = client.get("/console/audit", headers=HTML, follow_redirects=False)
        assert sign_in(client, "fiona", first).status_code == 401
        assert sign_in(client, "fiona", second).status_code == 303
    assert changed.exit_code == 0, changed.output
    assert "1 open session(s) ended" in changed.output
    assert ended.status_code == 303
    with pg_database.transaction() as session:
        user = check_password(session, "fiona", second)
    assert user is not None
    assert user.password_hash.startswith("$argon2id$")


def test_a_portal_link_is_claimed_once_and_its_session_reads_its_tenant(
    pg_database: Database,
) -> None:
    create_tenant_with_key(pg_database, "acme")
    with pg_database.transaction() as session:
        link = create_portal_link(
            session, "acme", base_url="https://x", ttl=timedelta(hours=1), actor=TEST_ACTOR
        )
    token = link.url.rsplit("#", 1)[1]
    with pg_database.transaction() as session:
        tenant = redeem_portal_link(session, token)
        assert tenant is not None
        cookie, _record = start_session(
            session, kind="portal", subject=tenant.name, tenant=tenant, max_age=timedelta(hours=1)
        )
    with pg_database.transaction() as session:
        again = redeem_portal_link(session, token)
        caller = read_session(session, cookie, idle=timedelta(minutes=30))
    assert again is None
    assert caller is not None
    assert caller.kind == "portal"
    assert caller.tenant_name == "acme"
    assert caller.actor().name == "portal:acme"


def test_a_user_lists_and_ends_their_own_sessions_and_steps_up(pg_database: Database) -> None:
    add_user(pg_database, "olivia", "owner")
    add_user(pg_database, "otto", "operator")
    create_tenant_with_key(pg_database, "acme")
    with console_client(pg_database, console_settings()) as client:
        otto = browser(client, "otto", "OttoBrowser/1")
        laptop = browser(client, "olivia", "Firefox/128")
        browser(client, "olivia", "Chrome/131")
        page = client.get(SESSIONS, headers=HTML)
        ended = client.post(
            f"{SESSIONS}/end-others",
            data={"csrf_token": signed_in_token(client, SESSIONS)},
            headers=HTML,
            follow_redirects=False,
        )
        signed_in_long_ago(pg_database)
        form = {"key_name": "ci", "csrf_token": signed_in_token(client)}
        prompt = client.post("/console/tenants/acme/keys", data=form, headers=HTML)
        confirmed = client.post(
            "/console/tenants/acme/keys", data={**form, "reauth_password": PASSWORD}, headers=HTML
        )
        laptop_after = as_browser(client, laptop, SESSIONS)
        otto_after = as_browser(client, otto, SESSIONS)
    assert sorted(listed(page).values()) == [False, True]
    assert ended.status_code == 303
    assert prompt.status_code == 401
    assert confirmed.status_code == 200
    assert "sk-asrgw-" in confirmed.text
    assert laptop_after.status_code == 401
    assert otto_after.status_code == 200

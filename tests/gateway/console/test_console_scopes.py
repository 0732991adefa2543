"""Console pages and forms need the scopes the admin API needs for the same data: one table
(``gateway.admin.scopes``), checked on both sides."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from billing.db import Database
from gateway.admin.scopes import READ, WRITE, Data, Scope
from gateway.console.sessions.service import start_session
from tests.fixtures.factories import create_tenant_with_key
from tests.gateway.admin_client import bearer, token
from tests.gateway.console.client import HTML, JSON, console_client, console_settings

EVERY_READ = frozenset().union(*READ.values())


def open_session_with(client: TestClient, database: Database, scopes: frozenset[Scope]) -> str:
    """A signed-in admin holding exactly ``scopes`` (as an SSO token would grant them); returns
    the session's CSRF token."""
    with database.transaction() as session:
        cookie, record = start_session(
            session, kind="admin", subject="sso-user", scopes=scopes, max_age=timedelta(hours=1)
        )
        csrf = record.csrf_token
    client.cookies.set("asrgw_console_session", cookie)
    return csrf


@pytest.fixture
def acme(database: Database) -> str:
    """The prefix of acme's one key."""
    secret = create_tenant_with_key(database, "acme")
    return secret.removeprefix("sk-asrgw-")[:12]


class TestTenantPage:
    def test_tenants_read_alone_shows_the_tenant_and_nothing_it_cannot_read(
        self, database: Database, acme: str
    ) -> None:
        with console_client(database, console_settings()) as client:
            open_session_with(client, database, READ[Data.tenants])
            page = client.get("/console/tenants/acme", headers=HTML)
        assert page.status_code == 200
        assert "Tenant acme" in page.text
        assert 'data-field="available"' in page.text  # the tenant's own balance, as the API
        for hidden in ("API keys", acme, "Invoices", "Credit entries", "Usage this month"):
            assert hidden not in page.text, hidden
        assert "Create a portal link" not in page.text

    def test_each_part_appears_with_the_scope_that_reads_it(
        self, database: Database, acme: str
    ) -> None:
        with console_client(database, console_settings()) as client:
            open_session_with(client, database, READ[Data.tenants] | READ[Data.keys])
            keys_only = client.get("/console/tenants/acme", headers=HTML)
            open_session_with(client, database, EVERY_READ)
            everything = client.get("/console/tenants/acme", headers=HTML)
        assert acme in keys_only.text
        assert "Credit entries" not in keys_only.text
        for shown in ("API keys", acme, "Invoices", "Credit entries", "Usage this month"):
            assert shown in everything.text, shown
        assert "Create key" not in everything.text  # reading is not writing


# (path, form, scopes held, the scope the refusal names): each lacks exactly one scope.
REFUSED = [
    ("/console", None, READ[Data.tenants], "billing:read"),
    ("/console/plans", None, READ[Data.tenants], "plans:read"),
    ("/console/invoices", None, READ[Data.tenants], "billing:read"),
    ("/console/tenants/acme/keys", {}, EVERY_READ, "keys:write"),
    ("/console/keys/{prefix}/revoke", {}, EVERY_READ, "keys:write"),
    ("/console/keys/{prefix}/rotate", {}, EVERY_READ, "keys:write"),
    (
        "/console/tenants/acme/credits",
        {"amount": "1", "idempotency_key": "k"},
        EVERY_READ | WRITE[Data.tenants],
        "billing:write",
    ),
    ("/console/plans", {"name": "p", "price_per_1k_tokens_micros": "1"}, EVERY_READ, "plans:write"),
    (
        "/console/tenants/acme/portal-links",
        {},
        EVERY_READ | WRITE[Data.tenants],
        "keys:write",
    ),
]


class TestRefusals:
    @pytest.mark.parametrize(("path", "form", "held", "named"), REFUSED)
    def test_a_role_without_the_scope_gets_403(
        self,
        database: Database,
        acme: str,
        path: str,
        form: dict[str, str] | None,
        held: frozenset[Scope],
        named: str,
    ) -> None:
        path = path.replace("{prefix}", acme)
        with console_client(database, console_settings()) as client:
            csrf = open_session_with(client, database, held)
            if form is None:
                response = client.get(path, headers=JSON)
            else:
                response = client.post(path, data={**form, "csrf_token": csrf}, headers=JSON)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "permission_denied"
        assert named in response.json()["error"]["message"]


@pytest.mark.usefixtures("acme")
class TestPortalLinks:
    def test_a_link_needs_every_scope_of_what_the_portal_does(self, database: Database) -> None:
        assert {Scope.tenants_write, Scope.keys_write} <= WRITE[Data.portal_links]
        with console_client(database, console_settings()) as client:
            settings = client.app.state.settings  # type: ignore[attr-defined]
            tenants_only = client.post(
                "/admin/tenants/acme/portal-links",
                headers=bearer(token(settings, [Scope.tenants_write])),
            )
            enough = client.post(
                "/admin/tenants/acme/portal-links",
                headers=bearer(token(settings, WRITE[Data.portal_links])),
            )
            csrf = open_session_with(client, database, WRITE[Data.portal_links])
            in_console = client.post(
                "/console/tenants/acme/portal-links", data={"csrf_token": csrf}, headers=HTML
            )
        assert tenants_only.status_code == 403
        assert "keys:write" in tenants_only.json()["error"]["message"]
        assert enough.status_code == 201
        assert in_console.status_code == 200
        assert "/console/portal/open#" in in_console.text

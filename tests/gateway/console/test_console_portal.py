"""The customer portal: opened by a single-use link, scoped to one tenant, probed with
another tenant's ids."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import select

from billing.db import Database
from billing.invoices.service import finalize
from billing.keys.schemas import KeyScope
from billing.keys.service import authenticate, create_api_key, list_api_keys, revoke_api_key
from billing.models import PortalLink
from billing.models.types import utcnow
from billing.periods import billing_period
from gateway.cli.main import cli
from gateway.log_redaction import RedactUrlSecrets
from tests.fixtures.factories import TEST_ACTOR, bill, create_tenant_with_key, usage_rows
from tests.gateway.admin_client import bearer, token
from tests.gateway.console.client import (
    HTML,
    JSON,
    add_user,
    console_client,
    console_settings,
    csrf_of,
    sign_in,
)

LINK = re.compile(r"^http://testserver/console/portal/open#([A-Za-z0-9_-]{40,})$")


def portal_link(client: TestClient, tenant: str, **body: object) -> str:
    """A new link, as the path and fragment a browser opens."""
    settings = client.app.state.settings  # type: ignore[attr-defined]
    response = client.post(
        f"/admin/tenants/{tenant}/portal-links",
        headers=bearer(token(settings)),
        json=body or None,
    )
    assert response.status_code == 201, response.text
    url = response.json()["url"]
    assert response.json()["tenant"] == tenant
    assert LINK.match(url), url
    return str(url).removeprefix("http://testserver")


def open_portal(client: TestClient, link: str, *, pasted: str | None = None) -> httpx.Response:
    """What the page does: its script moves the fragment into the form, which is posted (or
    the customer pastes the link into the form's field)."""
    path, _, link_token = link.partition("#")
    client.cookies.pop("asrgw_console_session", None)
    page = client.get(path, headers=HTML)  # a browser never sends the fragment
    assert page.status_code == 200
    return client.post(
        path,
        data={"csrf_token": csrf_of(page), "token": link_token if pasted is None else pasted},
        headers=HTML,
        follow_redirects=False,
    )


@pytest.fixture
def two_tenants(database: Database) -> dict[str, str]:
    """acme and globex, each with a key, usage, and a finalized invoice for a different month."""
    secrets = {
        "acme": create_tenant_with_key(database, "acme"),
        "globex": create_tenant_with_key(database, "globex", price_per_1k_tokens_micros=30_000),
    }
    for tenant, secret in secrets.items():
        with database.transaction() as session:
            caller = authenticate(session, secret)
        bill(database, caller, f"{tenant}-1", f"{tenant} said the weather is nice", model="m1")
        bill(database, caller, f"{tenant}-2", "hello there", model="m2")
    this_month = billing_period(datetime.now(UTC))
    with database.transaction() as session:
        finalize(session, "acme", this_month, actor=TEST_ACTOR)
        finalize(session, "globex", "2020-01", actor=TEST_ACTOR)
    return secrets


@pytest.mark.usefixtures("two_tenants")
class TestPortalLinks:
    def test_a_link_opens_one_session_once(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            path = portal_link(client, "acme")
            opened = open_portal(client, path)
            home = client.get("/console/portal", headers=HTML)
            reused = open_portal(client, path)
        assert opened.status_code == 303
        assert opened.headers["location"] == "/console/portal"
        assert "<h1>acme</h1>" in home.text
        assert reused.status_code == 410
        assert "portal_link_invalid" in reused.text

    def test_an_expired_or_unknown_link_opens_nothing(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            path = portal_link(client, "acme")
            with database.transaction() as session:
                session.execute(
                    update(PortalLink).values(expires_at=utcnow() - timedelta(seconds=1))
                )
            expired = open_portal(client, path)
            unknown = open_portal(client, "/console/portal/open#not-a-real-token")
            after = client.get("/console/portal", headers=JSON)
        assert expired.status_code == 410
        assert unknown.status_code == 410
        assert after.status_code == 401

    def test_the_cli_prints_a_link_that_opens_the_portal(
        self, database: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("BILLING_DATABASE_URL", database.url)
        monkeypatch.setenv("GATEWAY_CONSOLE_PUBLIC_URL", "https://billing.example.com")
        result = CliRunner().invoke(cli, ["admin", "portal-link", "globex"])
        assert result.exit_code == 0, result.output
        url = result.output.strip().splitlines()[-1]
        assert url.startswith("https://billing.example.com/console/portal/open#")
        with console_client(database, console_settings()) as client:
            opened = open_portal(client, url.removeprefix("https://billing.example.com"))
            home = client.get("/console/portal", headers=HTML)
        assert opened.status_code == 303
        assert "<h1>globex</h1>" in home.text


@pytest.mark.usefixtures("two_tenants")
class TestLinkTokensStayOutOfUrls:
    def test_the_page_carries_no_token_and_offers_a_field_to_paste_it(
        self, database: Database
    ) -> None:
        with console_client(database, console_settings()) as client:
            link = portal_link(client, "acme")
            page = client.get("/console/portal/open", headers=HTML)
        assert link.partition("#")[2] not in page.text
        assert 'action="/console/portal/open"' in page.text
        assert 'name="token"' in page.text
        assert "/console/static/portal_open.js" in page.text

    def test_a_pasted_whole_link_opens_the_portal(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            link = portal_link(client, "acme")
            opened = open_portal(client, link, pasted=f"  http://testserver{link}  ")
        assert opened.status_code == 303
        assert opened.headers["location"] == "/console/portal"

    def test_no_token_opens_nothing(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            refused = open_portal(client, "/console/portal/open")
        assert refused.status_code == 410
        assert "portal_link_invalid" in refused.text

    def test_opening_needs_the_pages_csrf_token(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            link_token = portal_link(client, "acme").partition("#")[2]
            forged = client.post("/console/portal/open", data={"token": link_token}, headers=JSON)
            opened = open_portal(client, f"/console/portal/open#{link_token}")
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "csrf_token_invalid"
        assert opened.status_code == 303

    def test_an_old_form_link_is_refused_unread_and_unechoed(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            link_token = portal_link(client, "acme").partition("#")[2]
            old = client.get(f"/console/portal/open/{link_token}", headers=HTML)
            posted = client.post(f"/console/portal/open/{link_token}", headers=JSON)
            still_unused = open_portal(client, f"/console/portal/open#{link_token}")
        assert old.status_code == 410
        assert "no longer accepted" in old.text
        assert link_token not in old.text
        assert posted.status_code == 405
        assert link_token not in posted.text
        assert still_unused.status_code == 303

    def test_an_old_form_link_leaves_no_token_in_the_access_log(self) -> None:
        record = logging.LogRecord(
            "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5555", "GET", "/console/portal/open/abcDEF123_-x", "1.1", 410), None,
        )  # fmt: skip
        assert RedactUrlSecrets().filter(record)
        assert record.getMessage() == (
            '127.0.0.1:5555 - "GET /console/portal/open/[redacted] HTTP/1.1" 410'
        )


@pytest.mark.usefixtures("two_tenants")
class TestLinkLifetime:
    def test_an_hour_by_default(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            portal_link(client, "acme")
        assert 59 * 60 < seconds_left(database) <= 3600

    def test_an_admin_may_ask_for_less(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            portal_link(client, "acme", expires_in_seconds=600)
        assert 590 < seconds_left(database) <= 600

    def test_not_for_more(self, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        with console_client(database, console_settings()) as client:
            response = client.post(
                "/admin/tenants/acme/portal-links",
                headers=bearer(token(client.app.state.settings)),  # type: ignore[attr-defined]
                json={"expires_in_seconds": 3601},
            )
        monkeypatch.setenv("BILLING_DATABASE_URL", database.url)
        cli_refusal = CliRunner().invoke(
            cli, ["admin", "portal-link", "acme", "--expires-in", "3601"]
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_value"
        assert response.json()["error"]["param"] == "expires_in_seconds"
        assert cli_refusal.exit_code == 2
        assert "at most 3600 seconds" in cli_refusal.output

    def test_the_console_form_takes_minutes(self, database: Database) -> None:
        add_user(database, "ada", "owner")
        with console_client(database, console_settings()) as client:
            sign_in(client, "ada")
            page = client.get("/console/tenants/acme", headers=HTML)
            created = client.post(
                "/console/tenants/acme/portal-links",
                data={"csrf_token": csrf_of(page), "expires_in_minutes": "5"},
                headers=HTML,
            )
        assert created.status_code == 200
        assert "data-portal-url" in created.text
        assert 290 < seconds_left(database) <= 300


def seconds_left(database: Database) -> float:
    with database.transaction() as session:
        (link,) = session.exec(select(PortalLink)).all()
    return (link.expires_at - utcnow()).total_seconds()


@pytest.mark.usefixtures("two_tenants")
class TestTenantIsolation:
    def test_every_page_and_export_refuses_the_other_tenants_ids(self, database: Database) -> None:
        with database.transaction() as session:
            globex_key = list_api_keys(session, "globex")[0].prefix
            acme_key = list_api_keys(session, "acme")[0].prefix
        this_month = billing_period(datetime.now(UTC))
        with console_client(database, console_settings()) as client:
            open_portal(client, portal_link(client, "acme"))
            csrf = csrf_of(client.get("/console/portal/keys", headers=HTML))
            revoke = client.post(
                f"/console/portal/keys/{globex_key}/revoke",
                data={"csrf_token": csrf},
                headers=JSON,
            )
            invoice = client.get("/console/portal/invoices/2020-01", headers=JSON)
            pdf = client.get("/console/portal/invoices/2020-01/pdf", headers=JSON)
            own_pdf = client.get(f"/console/portal/invoices/{this_month}/pdf")
            playground = client.post(
                "/console/portal/playground",
                data={"key_prefix": globex_key},
                files={"file": ("a.wav", b"RIFF", "audio/wav")},
                headers={"X-CSRF-Token": csrf, **JSON},
            )
            csv = client.get("/console/portal/usage.csv?tenant=globex").text
            pages = {
                page: client.get(page, headers=HTML).text
                for page in (
                    "/console/portal",
                    "/console/portal/usage",
                    "/console/portal/keys",
                    "/console/portal/invoices",
                    "/console/portal/playground",
                )
            }
            admin_pages = [
                client.get(page, headers=JSON).status_code
                for page in ("/console", "/console/tenants/globex", "/console/invoices")
            ]
        for response in (revoke, invoice, pdf, playground):
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "not_found"
        assert own_pdf.headers["content-type"] == "application/pdf"
        assert admin_pages == [403, 403, 403]
        assert "globex" not in csv
        assert "m1" in csv
        for page, text in pages.items():
            assert "globex" not in text, page
            assert globex_key not in text, page
        assert acme_key in pages["/console/portal/keys"]
        with database.transaction() as session:
            assert list_api_keys(session, "globex")[0].revoked_at is None

    def test_usage_numbers_equal_the_ledger(self, database: Database) -> None:
        acme_rows = [row for row in usage_rows(database) if row.request_id.startswith("acme")]
        with console_client(database, console_settings()) as client:
            open_portal(client, portal_link(client, "acme"))
            page = client.get("/console/portal/usage", headers=HTML).text
            csv = client.get("/console/portal/usage.csv").text.strip().splitlines()
        day = acme_rows[0].created_at.date().isoformat()
        for model in ("m1", "m2"):
            (row,) = [r for r in acme_rows if r.model == model]
            shown = re.search(
                rf'data-day="{day}" data-model="{model}">.*?data-field="requests">(\d+)<.*?'
                r'data-field="output_tokens">(\d+)<.*?data-field="billed_tokens">(\d+)<.*?'
                r'data-field="cost_micros">(\d+)<',
                page,
                re.S,
            )
            assert shown is not None, page
            assert shown.groups() == (
                "1",
                str(row.output_tokens),
                str(row.billed_tokens),
                str(row.cost_micros),
            )
            assert f"{day},{model},USD,1,{row.audio_ms},{row.output_tokens}," in "\n".join(csv)
        total = sum(row.cost_micros for row in acme_rows)
        assert f'data-field="total-cost-micros">{total}<' in page

    def test_a_customer_creates_and_revokes_their_own_key(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            open_portal(client, portal_link(client, "acme"))
            csrf = csrf_of(client.get("/console/portal/keys", headers=HTML))
            created = client.post(
                "/console/portal/keys",
                data={"key_name": "from the portal", "scopes": "usage:read", "csrf_token": csrf},
                headers=HTML,
            )
            secret = re.search(r'value="(sk-asrgw-[^"]+)"', created.text)
            assert secret is not None
            usage = client.get("/v1/usage", headers=bearer(secret[1]))
            prefix = secret[1][len("sk-asrgw-") :][:12]
            revoked = client.post(
                f"/console/portal/keys/{prefix}/revoke",
                data={"csrf_token": csrf},
                headers=HTML,
                follow_redirects=False,
            )
        assert usage.status_code == 200
        assert usage.json()["tenant"] == "acme"
        assert revoked.headers["location"] == "/console/portal/keys?notice=key-revoked"
        with database.transaction() as session:
            keys = {key.prefix: key for key in list_api_keys(session, "acme")}
        assert keys[prefix].name == "from the portal"
        assert keys[prefix].revoked_at is not None


@pytest.mark.usefixtures("two_tenants")
class TestPortalRefusals:
    def test_the_playground_refuses_keys_that_may_not_transcribe(self, database: Database) -> None:
        with database.transaction() as session:
            reader = create_api_key(
                session, "acme", scopes=[KeyScope.usage_read], actor=TEST_ACTOR
            ).key.prefix
            revoked = create_api_key(session, "acme", actor=TEST_ACTOR).key.prefix
            revoke_api_key(session, revoked, actor=TEST_ACTOR)
        with console_client(database, console_settings()) as client:
            open_portal(client, portal_link(client, "acme"))
            csrf = csrf_of(client.get("/console/portal/keys", headers=HTML))
            page = client.get("/console/portal/playground", headers=HTML).text
            answers = {
                prefix: client.post(
                    "/console/portal/playground",
                    data={"key_prefix": prefix},
                    files={"file": ("a.wav", b"RIFF", "audio/wav")},
                    headers={"X-CSRF-Token": csrf, **JSON},
                )
                for prefix in (reader, revoked)
            }
        assert reader not in page  # only keys that may transcribe are offered
        assert revoked not in page
        for prefix, answer in answers.items():
            assert answer.status_code == 403, prefix
            assert answer.json()["error"]["param"] == "key_prefix"
        assert "lacks the scope 'audio:transcribe'" in answers[reader].json()["error"]["message"]
        assert "revoked" in answers[revoked].json()["error"]["message"]
        assert len(usage_rows(database)) == 4  # nothing billed

    def test_a_bad_usage_range_is_400(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            open_portal(client, portal_link(client, "acme"))
            answers = [
                client.get(f"/console/portal/usage?{query}", headers=JSON)
                for query in (
                    "from=2026-13-01",
                    "from=2026-11-02&to=2026-11-01",
                    "from=2024-01-01&to=2026-01-01",
                )
            ]
        assert [answer.status_code for answer in answers] == [400, 400, 400]
        assert "366 days" in answers[2].json()["error"]["message"]

"""Step-up authentication: keys, credit and plans ask for the password (or a fresh SSO token)
again once the last proof is older than GATEWAY_CONSOLE_REAUTH_SECONDS.

The grace is driven by the session's recorded times, moved back in the ledger: no test waits."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import select

from billing.db import Database
from billing.keys.service import list_api_keys
from billing.models import ConsoleSession
from billing.models.types import utcnow
from gateway.admin.scopes import Scope
from gateway.console.sessions.service import start_session
from tests.fixtures.factories import create_tenant_with_key
from tests.gateway.admin_client import token
from tests.gateway.console.client import (
    HTML,
    JSON,
    PASSWORD,
    add_user,
    console_client,
    console_settings,
    sign_in,
    signed_in_token,
)
from tests.gateway.console.test_console_portal import open_portal, portal_link

GRACE_SECONDS = 300


def signed_in_long_ago(database: Database) -> None:
    """Every session proved its user's identity eleven minutes ago and was used just now."""
    long_ago = utcnow() - timedelta(minutes=11)
    with database.transaction() as session:
        session.execute(update(ConsoleSession).values(created_at=long_ago, reauthenticated_at=None))


def keys_of(database: Database) -> int:
    with database.transaction() as session:
        return len(list_api_keys(session, "acme"))


def create_key(client: TestClient, **extra: str) -> httpx.Response:
    form = {"key_name": "ci", "scopes": "audio:transcribe", **extra}
    return client.post(
        "/console/tenants/acme/keys",
        data={**form, "csrf_token": signed_in_token(client)},
        headers=HTML,
        follow_redirects=False,
    )


@pytest.fixture
def olivia(database: Database) -> None:
    add_user(database, "olivia", "owner")
    create_tenant_with_key(database, "acme")


@pytest.mark.usefixtures("olivia")
class TestPasswordStepUp:
    def test_without_recent_sign_in_the_action_asks_for_the_password(
        self, database: Database
    ) -> None:
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            signed_in_long_ago(database)
            prompt = create_key(client)
            as_json = client.post(
                "/console/tenants/acme/keys",
                data={"key_name": "x", "csrf_token": signed_in_token(client)},
                headers=JSON,
            )
        assert prompt.status_code == 401
        assert 'name="reauth_password"' in prompt.text
        assert 'action="/console/tenants/acme/keys"' in prompt.text
        assert '<input type="hidden" name="key_name" value="ci">' in prompt.text
        assert '<input type="hidden" name="scopes" value="audio:transcribe">' in prompt.text
        assert as_json.json()["error"]["code"] == "reauthentication_required"
        assert keys_of(database) == 1  # nothing was created

    def test_a_wrong_password_is_refused_and_counted_as_a_failed_sign_in(
        self, database: Database
    ) -> None:
        with console_client(database, console_settings(console_sign_in_limit="2/minute")) as c:
            sign_in(c, "olivia")
            signed_in_long_ago(database)
            wrong = [create_key(c, reauth_password="not the password") for _ in range(2)]
            throttled = create_key(c, reauth_password=PASSWORD)
        for response in wrong:
            assert response.status_code == 401
            assert 'data-code="reauthentication_failed"' in response.text
        assert throttled.status_code == 429
        assert "sign_in_throttled" in throttled.text
        assert keys_of(database) == 1

    def test_the_right_password_does_it_and_opens_the_grace(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            signed_in_long_ago(database)
            created = create_key(client, reauth_password=PASSWORD)
            again = create_key(client)  # within the grace: no prompt
        assert created.status_code == 200
        assert "sk-asrgw-" in created.text
        assert again.status_code == 200
        assert keys_of(database) == 3
        with database.transaction() as session:
            record = session.exec(select(ConsoleSession)).one()
        assert record.reauthenticated_at is not None
        assert utcnow() - record.reauthenticated_at < timedelta(seconds=GRACE_SECONDS)

    def test_a_fresh_sign_in_is_within_the_grace(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            created = create_key(client)
        assert created.status_code == 200
        assert keys_of(database) == 2

    @pytest.mark.parametrize(
        ("path", "form"),
        [
            ("/console/tenants/acme/credits", {"amount": "5", "idempotency_key": "k1"}),
            ("/console/plans", {"name": "pro", "price_per_1k_tokens_micros": "1"}),
            ("/console/keys/{prefix}/rotate", {"grace_seconds": "0"}),
        ],
    )
    def test_credit_plans_and_rotation_ask_too(
        self, database: Database, path: str, form: dict[str, str]
    ) -> None:
        with database.transaction() as session:
            prefix = list_api_keys(session, "acme")[0].prefix
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            signed_in_long_ago(database)
            response = client.post(
                path.replace("{prefix}", prefix),
                data={**form, "csrf_token": signed_in_token(client)},
                headers=JSON,
            )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "reauthentication_required"


class TestSsoStepUp:
    def test_a_fresh_token_of_the_same_subject_confirms_another_does_not(
        self, database: Database
    ) -> None:
        create_tenant_with_key(database, "acme")
        with console_client(database, console_settings()) as client:
            settings = client.app.state.settings  # type: ignore[attr-defined]
            with database.transaction() as session:
                cookie, record = start_session(
                    session,
                    kind="admin",
                    subject="sso-user",
                    scopes=frozenset(Scope),
                    max_age=timedelta(hours=1),
                )
                csrf = record.csrf_token
            client.cookies.set("asrgw_console_session", cookie)
            signed_in_long_ago(database)
            form = {"key_name": "ci", "csrf_token": csrf}

            def post(**extra: str) -> httpx.Response:
                return client.post(
                    "/console/tenants/acme/keys", data={**form, **extra}, headers=HTML
                )

            prompt = post()
            someone_else = post(reauth_token=token(settings, subject="mallory"))
            confirmed = post(reauth_token=token(settings, subject="sso-user"))
        assert prompt.status_code == 401
        assert 'name="reauth_token"' in prompt.text
        assert someone_else.status_code == 401
        assert 'data-code="reauthentication_failed"' in someone_else.text
        assert confirmed.status_code == 200
        assert keys_of(database) == 2


class TestPortalStepUp:
    def test_a_portal_session_creates_keys_only_while_its_link_is_fresh(
        self, database: Database
    ) -> None:
        create_tenant_with_key(database, "acme")
        with console_client(database, console_settings()) as client:
            open_portal(client, portal_link(client, "acme"))
            csrf = signed_in_token(client, "/console/portal/keys")
            fresh = client.post(
                "/console/portal/keys", data={"key_name": "a", "csrf_token": csrf}, headers=HTML
            )
            signed_in_long_ago(database)
            stale = client.post(
                "/console/portal/keys", data={"key_name": "b", "csrf_token": csrf}, headers=HTML
            )
        assert fresh.status_code == 200
        assert stale.status_code == 401
        assert "new portal link" in stale.text
        assert 'name="reauth_password"' not in stale.text
        assert keys_of(database) == 2

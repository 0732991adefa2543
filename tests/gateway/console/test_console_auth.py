"""Console sign-in, sessions, CSRF, roles and throttling, against a real ledger."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from fastapi.routing import APIRoute
from sqlalchemy import update

from billing.db import Database
from billing.migrate import upgrade_to_head
from billing.models import ConsoleSession
from billing.models.types import utcnow
from gateway.cli.main import cli
from gateway.config import GatewaySettings
from gateway.console.router import ROUTERS
from tests.conftest import NODE_SECRET
from tests.fixtures.processes import free_port
from tests.fixtures.redis import delete_prefixed, shared_redis_url, unique_prefix
from tests.gateway.console.client import (
    HTML,
    JSON,
    PASSWORD,
    add_user,
    console_client,
    console_settings,
    csrf_of,
    sign_in,
    signed_in_token,
)
from tests.gateway.test_admin_auth import ISSUER, JwksServer, claims


def age_sessions(database: Database, **changes: Any) -> None:
    with database.transaction() as session:
        session.execute(update(ConsoleSession).values(**changes))


def console_posts() -> list[str]:
    """Every state-changing console route, with sample path parameters."""
    paths = []
    for router in ROUTERS:
        for child in router.routes:
            if isinstance(child, APIRoute):
                assert child.methods <= {"GET", "POST"}, child.path
                if "POST" in child.methods:
                    paths.append(
                        child.path.replace("{name}", "acme")
                        .replace("{prefix}", "0123456789ab")
                        .replace("{tenant}", "acme")
                        .replace("{period}", "2026-11")
                        .replace("{node}", "node_x")
                        .replace("{token}", "t")
                        .replace("{session_id}", "1")
                    )
    return sorted(set(paths))


class TestSignIn:
    def test_a_password_opens_a_server_side_session_in_an_http_only_cookie(
        self, database: Database
    ) -> None:
        add_user(database, "olivia", "owner")
        with console_client(database, console_settings()) as client:
            response = sign_in(client, "olivia")
            assert response.status_code == 303
            assert response.headers["location"] == "/console"
            cookie = response.headers["set-cookie"]
            assert cookie.startswith("asrgw_console_session=")
            assert "HttpOnly" in cookie
            assert "SameSite=lax" in cookie
            assert "Secure" not in cookie  # plain-http loopback development
            token = client.cookies["asrgw_console_session"]
            overview = client.get("/console", headers=HTML)
        assert overview.status_code == 200
        assert "<h1>Overview</h1>" in overview.text
        assert "olivia" in overview.text
        with database.transaction() as session:
            (row,) = session.query(ConsoleSession).all()
        assert token not in (row.token_hash, row.csrf_token)  # only its hash is stored
        assert row.subject == "olivia"

    def test_production_cookies_are_secure_and_host_bound(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        settings = console_settings(
            console_secure_cookies=None, environment="production", node_secret=NODE_SECRET
        )
        with console_client(database, settings) as client:
            client.base_url = "https://testserver"  # type: ignore[assignment]
            response = sign_in(client, "olivia")
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-asrgw_console_session=")
        assert "Secure" in cookie
        assert "Path=/" in cookie

    def test_a_wrong_password_shows_the_form_again(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        with console_client(database, console_settings()) as client:
            response = sign_in(client, "olivia", "not the password at all")
            unknown = sign_in(client, "nobody", PASSWORD)
        assert response.status_code == 401
        assert "Wrong username or password" in response.text
        assert "asrgw_console_session" not in response.headers.get("set-cookie", "")
        assert unknown.status_code == 401

    def test_failed_attempts_are_throttled_per_address_with_retry_after(
        self, database: Database
    ) -> None:
        add_user(database, "olivia", "owner")
        settings = console_settings(console_sign_in_limit="3/minute")
        with console_client(database, settings) as client:
            assert sign_in(client, "olivia").status_code == 303  # success is never counted
            failures = [sign_in(client, "olivia", "wrong password!!").status_code for _ in range(3)]
            refused = sign_in(client, "olivia")  # the right password, while throttled
            as_json = client.post(
                "/console/sign-in",
                data={"username": "olivia", "password": PASSWORD, "csrf_token": "x"},
                headers=JSON,
            )
        assert failures == [401, 401, 401]
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "sign_in_throttled" in refused.text
        # The CSRF check comes first: a forged form never reaches the throttle.
        assert as_json.status_code == 403

    def test_a_disabled_user_cannot_sign_in_and_their_sessions_end(
        self, database: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        add_user(database, "olivia", "owner")
        monkeypatch.setenv("BILLING_DATABASE_URL", database.url)
        with console_client(database, console_settings()) as client:
            assert sign_in(client, "olivia").status_code == 303
            result = CliRunner().invoke(cli, ["admin", "user", "disable", "olivia"])
            assert result.exit_code == 0, result.output
            after = client.get("/console", headers=HTML, follow_redirects=False)
            again = sign_in(client, "olivia")
        assert after.status_code == 303
        assert after.headers["location"].startswith("/console/sign-in")
        assert again.status_code == 401


class TestSessionLifetime:
    def test_an_idle_session_ends(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        settings = console_settings(console_session_idle_seconds=600)
        with console_client(database, settings) as client:
            sign_in(client, "olivia")
            assert client.get("/console", headers=HTML).status_code == 200
            age_sessions(database, last_seen_at=utcnow() - timedelta(seconds=601))
            response = client.get("/console/tenants", headers=HTML, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/console/sign-in?next=/console/tenants"

    def test_a_session_ends_at_its_absolute_limit_however_busy(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            age_sessions(database, expires_at=utcnow() - timedelta(seconds=1))
            response = client.get("/console", headers=JSON)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "console_sign_in_required"

    def test_sign_out_ends_the_session_for_a_copied_cookie_too(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            stolen = client.cookies["asrgw_console_session"]
            out = client.post(
                "/console/sign-out",
                data={"csrf_token": signed_in_token(client)},
                headers=HTML,
                follow_redirects=False,
            )
            client.cookies.set("asrgw_console_session", stolen)
            replay = client.get("/console", headers=HTML, follow_redirects=False)
        assert out.status_code == 303
        assert out.headers["location"] == "/console/sign-in?notice=signed-out"
        assert replay.status_code == 303

    def test_the_cli_revokes_by_user_and_by_session_id(
        self, database: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        add_user(database, "olivia", "owner")
        monkeypatch.setenv("BILLING_DATABASE_URL", database.url)
        runner = CliRunner()
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            listed = runner.invoke(cli, ["admin", "session", "list"])
            assert listed.exit_code == 0, listed.output
            assert "olivia" in listed.output
            by_user = runner.invoke(cli, ["admin", "session", "revoke", "--user", "olivia"])
            after_user = client.get("/console", headers=HTML, follow_redirects=False)
            sign_in(client, "olivia")
            with database.transaction() as session:
                newest = max(row.id for row in session.query(ConsoleSession).all())
            by_id = runner.invoke(cli, ["admin", "session", "revoke", "--session", str(newest)])
            after_id = client.get("/console", headers=HTML, follow_redirects=False)
            unknown = runner.invoke(cli, ["admin", "session", "revoke", "--session", "999999"])
        assert by_user.exit_code == 0, by_user.output
        assert "1 session(s) of admin olivia revoked" in by_user.output
        assert after_user.status_code == 303
        assert by_id.exit_code == 0, by_id.output
        assert after_id.status_code == 303
        assert unknown.exit_code == 1
        assert "no open console session" in unknown.output


class TestCsrf:
    def test_every_state_changing_route_refuses_a_request_without_its_token(
        self, database: Database
    ) -> None:
        add_user(database, "olivia", "owner")
        # A JWKS URL opens the SSO route (nothing is fetched: the token check comes first).
        settings = console_settings(admin_jwks_url=f"http://127.0.0.1:{free_port()}/jwks")
        with console_client(database, settings) as client:
            sign_in(client, "olivia")
            posts = console_posts()
            missing = {path: client.post(path, data={}, headers=JSON) for path in posts}
            wrong = {
                path: client.post(path, data={"csrf_token": "forged"}, headers=JSON)
                for path in posts
            }
        assert len(posts) == 21
        for path, response in (missing | {f"{k} (forged)": v for k, v in wrong.items()}).items():
            assert response.status_code == 403, (path, response.text)
            assert response.json()["error"]["code"] == "csrf_token_invalid", path

    def test_a_token_that_is_not_ascii_is_refused_not_a_server_error(
        self, database: Database
    ) -> None:
        add_user(database, "olivia", "owner")
        with console_client(database, console_settings()) as client:
            client.get("/console/sign-in", headers=HTML)  # sets the double-submit cookie
            at_sign_in = client.post(
                "/console/sign-in",
                data={"username": "olivia", "password": PASSWORD, "csrf_token": "jeton-été-✓"},
                headers=JSON,
            )
            sign_in(client, "olivia")
            signed_in = client.post(
                "/console/tenants", data={"name": "acme", "csrf_token": "ключ"}, headers=JSON
            )
            listed = client.get("/console/tenants", headers=HTML)
        for response in (at_sign_in, signed_in):
            assert response.status_code == 403, response.text
            assert response.json()["error"]["code"] == "csrf_token_invalid"
        assert "acme" not in listed.text

    def test_a_page_shows_the_refusal_with_its_code(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            response = client.post("/console/tenants", data={"name": "acme"}, headers=HTML)
            listed = client.get("/console/tenants", headers=HTML)
        assert response.status_code == 403
        assert "<code>csrf_token_invalid</code>" in response.text
        assert "acme" not in listed.text  # nothing was created


class TestRoles:
    def test_finance_reads_everything_and_writes_nothing(self, database: Database) -> None:
        add_user(database, "fiona", "finance")
        with console_client(database, console_settings()) as client:
            sign_in(client, "fiona")
            pages = {
                page: client.get(page, headers=HTML).status_code
                for page in (
                    "/console",
                    "/console/tenants",
                    "/console/plans",
                    "/console/invoices",
                    "/console/nodes",
                    "/console/audit",
                )
            }
            token = signed_in_token(client, "/console/plans")
            write = client.post(
                "/console/tenants", data={"name": "acme", "csrf_token": token}, headers=JSON
            )
            page = client.get("/console/plans", headers=HTML)
        assert set(pages.values()) == {200}
        assert write.status_code == 403
        assert write.json()["error"]["code"] == "permission_denied"
        assert "tenants:write" in write.json()["error"]["message"]
        assert "Create plan" not in page.text  # no form for what the role cannot do

    def test_an_operator_cannot_change_prices(self, database: Database) -> None:
        add_user(database, "otto", "operator")
        with console_client(database, console_settings()) as client:
            sign_in(client, "otto")
            token = signed_in_token(client)
            plan = client.post(
                "/console/plans",
                data={"name": "cheap", "price_per_1k_tokens_micros": "1", "csrf_token": token},
                headers=JSON,
            )
            tenant = client.post(
                "/console/tenants",
                data={"name": "acme", "csrf_token": token},
                headers=HTML,
                follow_redirects=False,
            )
        assert plan.status_code == 403
        assert tenant.status_code == 303
        assert tenant.headers["location"] == "/console/tenants/acme?notice=tenant-created"


class TestSingleSignOn:
    @pytest.fixture
    def provider(self) -> Any:
        server = JwksServer()
        yield server
        server.close()

    def settings(self, provider: JwksServer) -> GatewaySettings:
        return console_settings(admin_jwks_url=provider.url, admin_jwt_issuer=ISSUER)

    def test_a_provider_token_opens_a_session_with_its_scopes(
        self, database: Database, provider: JwksServer
    ) -> None:
        signed = jwt.encode(
            claims(scope="tenants:read"),
            provider.rsa_key,
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        )
        with console_client(database, self.settings(provider)) as client:
            form = client.get("/console/sign-in", headers=HTML)
            assert "Single sign-on" in form.text
            response = client.post(
                "/console/sign-in/sso",
                data={"token": signed, "csrf_token": csrf_of(form)},
                headers=HTML,
                follow_redirects=False,
            )
            tenants = client.get("/console/tenants", headers=HTML)
            plans = client.get("/console/plans", headers=JSON)
        assert response.status_code == 303
        assert tenants.status_code == 200
        assert "ops@example.com" in tenants.text
        assert plans.status_code == 403  # the token granted no plans:read

    def test_a_bearer_header_from_an_sso_proxy_needs_no_form_token(
        self, database: Database, provider: JwksServer
    ) -> None:
        signed = jwt.encode(
            claims(scope="audit:read"),
            provider.ec_key,
            algorithm="ES256",
            headers={"kid": "ec-1"},
        )
        with console_client(database, self.settings(provider)) as client:
            response = client.post(
                "/console/sign-in/sso",
                headers={"Authorization": f"Bearer {signed}", **HTML},
                follow_redirects=False,
            )
            audit = client.get("/console/audit", headers=HTML)
        assert response.status_code == 303
        assert audit.status_code == 200

    def test_a_forged_or_expired_token_opens_nothing(
        self, database: Database, provider: JwksServer
    ) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "rsa-1"})
        expired = jwt.encode(
            claims(exp=int(time.time()) - 600),
            provider.rsa_key,
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        )
        with console_client(database, self.settings(provider)) as client:
            answers = [
                client.post(
                    "/console/sign-in/sso",
                    headers={"Authorization": f"Bearer {token}", **HTML},
                    follow_redirects=False,
                )
                for token in (forged, expired)
            ]
        assert [answer.status_code for answer in answers] == [401, 401]
        assert "expired" in answers[1].text
        assert "asrgw_console_session" not in client.cookies

    def test_without_a_jwks_there_is_no_sso_sign_in(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            response = client.post(
                "/console/sign-in/sso", headers={"Authorization": "Bearer x", **JSON}
            )
        assert response.status_code == 404


class TestSharedThrottle:
    def test_replicas_count_failures_together_in_redis(self, sqlite_url: str) -> None:
        upgrade_to_head(sqlite_url)
        database = Database(sqlite_url)
        url = shared_redis_url()
        prefix = unique_prefix()
        add_user(database, "olivia", "owner")
        settings = console_settings(
            redis_url=url, rate_limit_key_prefix=prefix, console_sign_in_limit="2/minute"
        )
        try:
            with (
                console_client(database, settings) as first,
                console_client(database, settings) as second,
            ):
                assert sign_in(first, "olivia", "wrong password!!").status_code == 401
                assert sign_in(second, "olivia", "wrong password!!").status_code == 401
                refused = sign_in(first, "olivia")
        finally:
            delete_prefixed(url, prefix)
            database.dispose()
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1


class TestThrottleStoreOutage:
    def test_an_unreachable_store_fails_open_or_closed_as_configured(
        self, database: Database
    ) -> None:
        add_user(database, "olivia", "owner")
        dead = f"redis://127.0.0.1:{free_port()}/0"
        with console_client(
            database, console_settings(redis_url=dead, rate_limit_on_store_error="open")
        ) as client:
            admitted = sign_in(client, "olivia")
        with console_client(
            database, console_settings(redis_url=dead, rate_limit_on_store_error="closed")
        ) as client:
            refused = sign_in(client, "olivia")
        assert admitted.status_code == 303
        assert refused.status_code == 503
        assert "rate_limiter_unavailable" in refused.text
        assert refused.headers["retry-after"] == "5"

"""Security headers on every kind of gateway response: API, errors from routes and from
middleware, metrics, health, downloads, console pages, redirects and refused WebSockets."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from starlette.testclient import WebSocketDenialResponse

from billing.db import Database
from billing.invoices.service import build_draft, finalize
from billing.periods import billing_period
from tests.fixtures.factories import TEST_ACTOR, create_tenant_with_key
from tests.gateway.admin_client import bearer, token
from tests.gateway.console.client import (
    HTML,
    JSON,
    add_user,
    console_client,
    console_settings,
    sign_in,
)

NOSNIFF = "nosniff"


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


def assert_nosniff(responses: dict[str, httpx.Response]) -> None:
    for what, response in responses.items():
        assert response.headers.get("x-content-type-options") == NOSNIFF, (what, response)


class TestEveryResponseIsNosniff:
    def test_api_errors_metrics_health_and_middleware_refusals(self, database: Database) -> None:
        key = create_tenant_with_key(database, "acme")
        with console_client(database, console_settings(max_upload_bytes=1024)) as client:
            responses = {
                "health": client.get("/health/live"),
                "metrics": client.get("/metrics"),
                "usage": client.get("/v1/usage", headers=bearer(key)),
                "401 no key": client.get("/v1/usage"),
                "404 no route": client.get("/no/such/path"),
                "413 from the upload middleware": client.post(
                    "/v1/audio/transcriptions",
                    headers={**bearer(key), "Content-Length": str(10 * 1024 * 1024)},
                    content=b"",
                ),
                "422 validation": client.get(
                    "/admin/reports/usage?from=x", headers=bearer(token(client.app.state.settings))
                ),
            }
            with pytest.raises(WebSocketDenialResponse) as refused:
                client.websocket_connect("/v1/realtime?intent=transcription").__enter__()
        assert responses["health"].status_code == 200
        assert responses["usage"].status_code == 200
        assert responses["401 no key"].status_code == 401
        assert responses["404 no route"].status_code == 404
        assert responses["413 from the upload middleware"].status_code == 413
        assert responses["413 from the upload middleware"].json()["error"]["code"] == (
            "file_too_large"
        )
        assert refused.value.status_code == 401
        assert_nosniff({**responses, "refused websocket": refused.value})

    def test_a_header_a_route_set_itself_is_not_doubled(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            page = client.get("/console/sign-in", headers=HTML)
        assert page.headers.get_list("x-content-type-options") == [NOSNIFF]
        assert page.headers.get_list("cache-control") == ["no-store"]


class TestDownloadsAreAttachments:
    def test_invoice_pdf_and_csv_and_usage_csv(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        create_tenant_with_key(database, "acme")
        period = billing_period(datetime.now(UTC))
        with database.transaction() as session:
            build_draft(session, "acme", period, actor=TEST_ACTOR)
            finalize(session, "acme", period, actor=TEST_ACTOR)
        with console_client(database, console_settings()) as client:
            admin = bearer(token(client.app.state.settings))
            sign_in(client, "olivia")
            downloads = {
                "invoice pdf": client.get(f"/console/invoices/acme/{period}/pdf"),
                "invoice csv": client.get(f"/console/invoices/acme/{period}/csv"),
                "usage report csv": client.get(
                    "/admin/reports/usage?from=2026-01-01&to=2026-02-01&format=csv", headers=admin
                ),
            }
        for what, response in downloads.items():
            assert response.status_code == 200, (what, response.text)
            assert response.headers["content-disposition"].startswith("attachment;"), what
        assert_nosniff(downloads)


class TestConsoleHeaders:
    def test_redirects_and_json_errors_are_never_cached_or_framed(self, database: Database) -> None:
        with console_client(database, console_settings()) as client:
            responses = {
                "redirect to sign-in": client.get(
                    "/console/tenants", headers=HTML, follow_redirects=False
                ),
                "json error": client.get("/console/tenants", headers=JSON),
                "page": client.get("/console/sign-in", headers=HTML),
            }
            static = client.get("/console/static/console.css")
        assert responses["redirect to sign-in"].status_code == 303
        assert responses["json error"].status_code == 401
        for what, response in responses.items():
            assert response.headers["cache-control"] == "no-store", what
            assert response.headers["referrer-policy"] == "same-origin", what
            assert response.headers["x-frame-options"] == "DENY", what
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"], what
        assert_nosniff(responses)
        assert static.status_code == 200
        assert "cache-control" not in static.headers  # static files may be cached
        assert static.headers["x-frame-options"] == "DENY"

    def test_https_deployments_get_strict_transport_security(self, database: Database) -> None:
        with console_client(database, console_settings(console_secure_cookies=True)) as client:
            secure = client.get("/health/live")
        with console_client(database, console_settings()) as client:
            plain = client.get("/health/live")
        assert secure.headers["strict-transport-security"] == "max-age=63072000"
        assert "strict-transport-security" not in plain.headers

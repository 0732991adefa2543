"""``asrgw gateway`` behind a proxy: which client address sign-in attempts are counted under,
and what its request log keeps of secret URLs. A real uvicorn process on loopback; the test
plays the proxy, writing X-Forwarded-For itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from billing.db import Database
from tests.fixtures.processes import free_port, running
from tests.gateway.admin_client import ADMIN_SECRET
from tests.gateway.console.client import HTML, add_user, csrf_of

pytestmark = pytest.mark.e2e

WRONG = "not the password at all"


@contextmanager
def gateway(database: Database, log: Path, **settings: str) -> Iterator[httpx.Client]:
    port = free_port()
    environment = {
        "BILLING_DATABASE_URL": database.url,
        "GATEWAY_NODES": f"http://127.0.0.1:{free_port()}",  # no node needed here
        "GATEWAY_ADMIN_JWT_SECRET": ADMIN_SECRET,
        "GATEWAY_CONSOLE_SIGN_IN_LIMIT": "2/minute",
        **settings,
    }
    url = f"http://127.0.0.1:{port}"
    with (
        running(["gateway", "--port", str(port)], environment, f"{url}/health/live", log),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


def wrong_sign_in(client: httpx.Client, username: str, forwarded_for: str) -> int:
    form = client.get("/console/sign-in", headers=HTML)
    answer = client.post(
        "/console/sign-in",
        data={"username": username, "password": WRONG, "csrf_token": csrf_of(form)},
        headers={**HTML, "X-Forwarded-For": forwarded_for},
    )
    return answer.status_code


class TestClientAddress:
    def test_a_trusted_proxy_names_the_client_and_a_client_cannot_rename_itself(
        self, database: Database, tmp_path: Path
    ) -> None:
        add_user(database, "olivia", "owner")
        trusted = {"GATEWAY_FORWARDED_ALLOW_IPS": "127.0.0.0/8"}
        with gateway(database, tmp_path / "gateway.log", **trusted) as client:
            counted = [
                wrong_sign_in(client, "user-a", "203.0.113.7"),
                # A proxy that appends: the client's own entry, then the address it saw.
                wrong_sign_in(client, "user-b", "198.51.100.1, 203.0.113.7"),
            ]
            spoofed = wrong_sign_in(client, "user-c", "198.51.100.2, 203.0.113.7")
            other_client = wrong_sign_in(client, "user-d", "203.0.113.8")
        assert counted == [401, 401]
        assert spoofed == 429
        assert other_client == 401

    def test_without_trusted_proxies_x_forwarded_for_is_not_believed(
        self, database: Database, tmp_path: Path
    ) -> None:
        with gateway(database, tmp_path / "gateway.log") as client:
            answers = [wrong_sign_in(client, f"user-{n}", f"203.0.113.{n}") for n in range(1, 4)]
        assert answers == [401, 401, 429]


class TestRequestLog:
    def test_query_tokens_and_portal_links_are_redacted(
        self, database: Database, tmp_path: Path
    ) -> None:
        log = tmp_path / "gateway.log"
        with gateway(database, log) as client:
            portal = client.get("/console/portal/open/portal-link-secret-1234", headers=HTML)
            funasr = client.get("/funasr", params={"token": "sk-asrgw-query-secret", "x": "1"})
        assert portal.status_code == 410  # an old-form link: refused, never redeemed
        assert funasr.status_code == 404  # a WebSocket route; logged all the same
        written = log.read_text()
        assert "GET /console/portal/open/[redacted] HTTP/1.1" in written
        assert "GET /funasr?token=[redacted]&x=1 HTTP/1.1" in written
        assert "portal-link-secret-1234" not in written
        assert "sk-asrgw-query-secret" not in written

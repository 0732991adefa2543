"""Admin: the node pool, registered and drained through the API and followed by every replica."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from billing.db import Database
from gateway.config import GatewaySettings
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import TEST_ACTOR, create_tenant_with_key
from tests.fixtures.processes import free_port, running
from tests.gateway.admin_client import ADMIN_SECRET, admin_client, admin_settings, bearer, token


def node_urls(listing: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {node["url"]: node for node in listing}


class TestNodeAdmin:
    def test_register_drain_undrain_and_remove(self, node_url: str, database: Database) -> None:
        settings = admin_settings(node_secret=NODE_SECRET)
        configured = settings.node_urls[0]
        admin = bearer(token(settings))
        with admin_client(database, settings) as client:
            listed = node_urls(client.get("/admin/nodes", headers=admin).json())
            assert listed[configured]["source"] == "config"

            added = client.post("/admin/nodes", json={"url": node_url + "/"}, headers=admin)
            assert added.status_code == 201, added.text
            assert (added.json()["url"], added.json()["source"]) == (node_url, "runtime")
            node_id = added.json()["id"]

            drained = client.post(f"/admin/nodes/{node_id}/drain", headers=admin)
            assert drained.json()["draining"] is True
            assert client.get(f"/admin/nodes/{node_id}", headers=admin).json()["draining"]
            undrained = client.post(f"/admin/nodes/{node_id}/undrain", headers=admin)
            assert undrained.json()["draining"] is False

            configured_id = listed[configured]["id"]
            refused = client.delete(f"/admin/nodes/{configured_id}", headers=admin)
            assert refused.status_code == 409
            assert "GATEWAY_NODES" in refused.json()["error"]["message"]
            removed = client.delete(f"/admin/nodes/{node_id}", headers=admin)
            assert removed.status_code == 200
            assert node_url not in node_urls(client.get("/admin/nodes", headers=admin).json())

            bad = client.post("/admin/nodes", json={"url": "ftp://x"}, headers=admin)
            assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_node_url")
            missing = client.post("/admin/nodes/node_0000000000/drain", headers=admin)
            assert missing.status_code == 404

            audit = client.get("/admin/audit", params={"target_type": "node"}, headers=admin)
        assert [entry["action"] for entry in audit.json()] == [
            "node.add",
            "node.drain",
            "node.undrain",
            "node.remove",
        ]

    def test_reading_needs_nodes_read_and_writing_nodes_write(self, database: Database) -> None:
        settings = admin_settings()
        with admin_client(database, settings) as client:
            reader = bearer(token(settings, []))
            assert client.get("/admin/nodes", headers=reader).status_code == 403
            refused = client.post("/admin/nodes", json={"url": "http://x:1"}, headers=reader)
            assert refused.status_code == 403


def wait_until(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


class TestAcrossReplicas:
    def test_a_node_registered_on_one_replica_serves_the_other(
        self, node_url: str, database: Database, tmp_path: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        environment = {
            "BILLING_DATABASE_URL": database.url,
            # Only a dead node is configured: the live one arrives through the admin API.
            "GATEWAY_NODES": f"http://127.0.0.1:{free_port()}",
            "GATEWAY_NODE_SECRET": NODE_SECRET,
            "GATEWAY_NODE_HEALTH_INTERVAL_SECONDS": "0.5",
            "GATEWAY_ADMIN_JWT_SECRET": ADMIN_SECRET,
            "GATEWAY_CACHE_ENABLED": "false",
        }
        admin = bearer(token(admin_settings()))
        audio = weather_wav.read_bytes()

        def transcribe(url: str) -> httpx.Response:
            return httpx.post(
                f"{url}/v1/audio/transcriptions",
                headers=bearer(key),
                files={"file": ("speech.wav", audio, "audio/wav")},
                data={"model": "whisper-1"},
                timeout=60,
            )

        def listing(url: str) -> dict[str, dict[str, Any]]:
            return node_urls(httpx.get(f"{url}/admin/nodes", headers=admin).json())

        with (
            running(["gateway", "--port", str(ports[0])], environment, f"{urls[0]}/health/live",
                    tmp_path / "gateway-a.log"),
            running(["gateway", "--port", str(ports[1])], environment, f"{urls[1]}/health/live",
                    tmp_path / "gateway-b.log"),
        ):  # fmt: skip
            assert transcribe(urls[1]).status_code == 503
            added = httpx.post(f"{urls[0]}/admin/nodes", json={"url": node_url}, headers=admin)
            assert added.status_code == 201
            wait_until(lambda: node_url in listing(urls[1]))
            wait_until(lambda: listing(urls[1])[node_url]["healthy"] is True)
            assert transcribe(urls[1]).status_code == 200

            node_id = added.json()["id"]
            assert httpx.post(f"{urls[0]}/admin/nodes/{node_id}/drain", headers=admin).is_success
            wait_until(lambda: listing(urls[1])[node_url]["draining"] is True)
            assert transcribe(urls[1]).status_code == 503  # the only live node is draining

            httpx.delete(f"{urls[0]}/admin/nodes/{node_id}", headers=admin)
            wait_until(lambda: node_url not in listing(urls[1]))


class CountingNode:
    """A listener on 127.0.0.2 standing where an attacker's node would be: it records every
    request and its Authorization header, so a test sees whether the gateway contacted it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.seen: list[tuple[str, str | None]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"status": "ready"}')

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.url = f"http://127.0.0.2:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TestNodeAllowList:
    @pytest.fixture
    def stranger(self) -> Iterator[CountingNode]:
        node = CountingNode()
        yield node
        node.close()

    @staticmethod
    def production(**overrides: Any) -> GatewaySettings:
        return admin_settings(environment="production", node_secret=NODE_SECRET, **overrides)

    def test_a_host_outside_the_allow_list_is_refused_and_never_contacted(
        self, database: Database, stranger: CountingNode
    ) -> None:
        settings = self.production()
        admin = bearer(token(settings))
        with admin_client(database, settings) as client:
            refused = client.post("/admin/nodes", json={"url": stranger.url}, headers=admin)
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "node_not_allowed"
            assert "GATEWAY_NODE_ALLOWED_HOSTS" in refused.json()["error"]["message"]
            client.get("/health/ready")  # checks every node of the pool now
            assert stranger.url not in node_urls(client.get("/admin/nodes", headers=admin).json())
            audit = client.get("/admin/audit", params={"target_type": "node"}, headers=admin)
        assert audit.json() == []
        assert stranger.seen == []

    def test_loopback_is_allowed_in_development_only(
        self, database: Database, stranger: CountingNode
    ) -> None:
        settings = admin_settings(node_secret=NODE_SECRET)
        admin = bearer(token(settings))
        with admin_client(database, settings) as client:
            added = client.post("/admin/nodes", json={"url": stranger.url}, headers=admin)
        assert added.status_code == 201, added.text

    def test_the_operator_list_admits_names_wildcards_and_networks(
        self, database: Database
    ) -> None:
        settings = self.production(
            node_allowed_hosts="gpu1.example.com, *.nodes.internal, 10.8.0.0/16"
        )
        admin = bearer(token(settings))
        with admin_client(database, settings) as client:
            for url, status in [
                ("http://gpu1.example.com:8001", 201),
                ("https://gpu7.eu.nodes.internal", 201),
                ("http://10.8.3.4:8001", 201),
                ("http://gpu2.example.com:8001", 403),
                ("http://nodes.internal:8001", 403),  # the wildcard needs a subdomain
                ("http://evilnodes.internal:8001", 403),
                ("http://10.9.0.1:8001", 403),
                ("http://[::1]:8001", 403),  # loopback: development only
            ]:
                response = client.post("/admin/nodes", json={"url": url}, headers=admin)
                assert response.status_code == status, (url, response.text)

    def test_a_malformed_network_is_refused_at_start(self) -> None:
        with pytest.raises(ValidationError, match="GATEWAY_NODE_ALLOWED_HOSTS"):
            self.production(node_allowed_hosts="10.0.0.0/33")

    def test_a_row_stored_before_the_rule_is_never_sent_the_secret(
        self, database: Database, stranger: CountingNode
    ) -> None:
        from billing.pool.service import pool_membership, register_node
        from gateway.nodes.membership import apply_membership

        with database.transaction() as session:
            register_node(session, stranger.url, actor=TEST_ACTOR)
            register_node(session, "http://gpu1.nodes.internal:8001", actor=TEST_ACTOR)
        settings = self.production(node_allowed_hosts="*.nodes.internal")
        admin = bearer(token(settings))
        with admin_client(database, settings) as client:
            with database.transaction() as session:
                membership = pool_membership(session)
            # What each replica's sync does every health interval, done now.
            apply_membership(client.app.state.nodes, membership)  # type: ignore[attr-defined]
            client.get("/health/ready")
            listed = node_urls(client.get("/admin/nodes", headers=admin).json())
        assert "http://gpu1.nodes.internal:8001" in listed
        assert stranger.url not in listed
        assert stranger.seen == []

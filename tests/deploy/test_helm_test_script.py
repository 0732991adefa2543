"""The chart's `helm test` script (deploy/helm/asrgw/files/helm_test.py) against the chart's
topology in miniature: the ledger on PostgreSQL migrated once by `asrgw migrate` (the hook), a
gateway started as the chart starts it (production, GATEWAY_MIGRATE_ON_START=false, nodes found
through DNS) and a real node process."""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from gateway.admin.auth import Scope, mint_token
from gateway.config import GatewaySettings
from tests.conftest import NODE_SECRET
from tests.deploy.conftest import CHART
from tests.fixtures.processes import asrgw, free_port, running

SCRIPT = CHART / "files" / "helm_test.py"
ADMIN_SECRET = "helm-test-admin-secret-of-forty-eight-characters"


def chart_environment(database_url: str, nodes: str) -> dict[str, str]:
    """What the chart's Deployment sets (docs/deploy.md#kubernetes)."""
    return {
        "BILLING_DATABASE_URL": database_url,
        "GATEWAY_ENVIRONMENT": "production",
        "GATEWAY_MIGRATE_ON_START": "false",
        "GATEWAY_NODES": nodes,
        "GATEWAY_NODE_DNS_REFRESH_SECONDS": "1",
        "GATEWAY_NODE_SECRET": NODE_SECRET,
        "GATEWAY_ADMIN_JWT_SECRET": ADMIN_SECRET,
        "GATEWAY_JOB_WORKERS": "1",
    }


@contextmanager
def chart_gateway(database_url: str, nodes: str, log_dir: Path) -> Iterator[str]:
    migrated = asrgw("migrate", env={"BILLING_DATABASE_URL": database_url})
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = chart_environment(database_url, nodes) | {
        "GATEWAY_JOB_STORAGE_DIR": str(log_dir / "job-audio")
    }
    with running(
        ["gateway", "--port", str(port)], environment, f"{url}/health/live", log_dir / "gw.log"
    ):
        yield url


def run_script(
    base_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str
) -> tuple[int, str]:
    """The script as the test pod runs it (in this process: its imports are loaded already)."""
    with monkeypatch.context() as patch:
        patch.setenv("ASRGW_BASE_URL", base_url)
        for name in ("ASRGW_API_KEY", "GATEWAY_ADMIN_JWT_SECRET"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        try:
            runpy.run_path(str(SCRIPT), run_name="__main__")
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, capsys.readouterr().out


def admin_call(base_url: str, method: str, path: str, scope: Scope) -> httpx.Response:
    settings = GatewaySettings(admin_jwt_secret=ADMIN_SECRET)
    token = mint_token(settings, "test", [scope], ttl_seconds=60)
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.request(method, f"{base_url}{path}", headers=headers)
    assert response.status_code == 200, response.text
    return response


class TestHelmTestScript:
    def test_it_passes_on_a_working_release_and_fails_on_a_broken_one(
        self,
        postgres_url: str,
        node_url: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        node_port = httpx.URL(node_url).port
        admin = {"GATEWAY_ADMIN_JWT_SECRET": ADMIN_SECRET}
        with chart_gateway(postgres_url, f"dns+http://localhost:{node_port}", tmp_path) as url:
            code, output = run_script(url, monkeypatch, capsys, **admin)
            assert code == 0, output
            assert "ok   GET /health/ready: 200" in output
            assert "ok   the nodes serve pocketsphinx-en" in output
            assert "ok   the test key revoked (HTTP 200)" in output

            # Again, as after every upgrade: the tenant is there already.
            code, output = run_script(url, monkeypatch, capsys, **admin)
            assert code == 0, output
            assert "ok   tenant helm-test exists (HTTP 409)" in output
            keys = admin_call(url, "GET", "/admin/keys?tenant=helm-test", Scope.keys_read).json()
            assert len(keys) == 2
            assert all(key["revoked_at"] is not None for key in keys)

            # With a stored key (SSO-only releases) the admin API is not used.
            code, output = run_script(url, monkeypatch, capsys, ASRGW_API_KEY="sk-asrgw-nothing")
            assert code == 1
            assert "FAIL GET /v1/models: 401" in output

            # No node to serve: the release is broken, and the test says so.
            (node,) = admin_call(url, "GET", "/admin/nodes", Scope.nodes_read).json()
            admin_call(url, "POST", f"/admin/nodes/{node['id']}/drain", Scope.nodes_write)
            code, output = run_script(url, monkeypatch, capsys, **admin)
            assert code == 1
            assert "FAIL GET /health/ready: 503" in output

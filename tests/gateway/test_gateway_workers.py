"""``asrgw gateway --workers N``: several processes on one port, one key's limit between them,
one set of metrics served by any of them."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from billing.db import Database
from billing.migrate import upgrade_to_head
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import create_tenant_with_key, usage_rows
from tests.fixtures.processes import asrgw, free_port, running
from tests.fixtures.redis import delete_prefixed, shared_redis_url, unique_prefix

pytestmark = pytest.mark.e2e

PER_MINUTE = 5
REQUESTS = 16


def test_more_than_one_worker_needs_redis() -> None:
    result = asrgw("gateway", "--workers", "2", env={"GATEWAY_REDIS_URL": ""})
    assert result.returncode == 2
    assert "GATEWAY_REDIS_URL" in result.stderr


def test_two_workers_admit_one_limit(node_url: str, tmp_path: Path) -> None:
    redis_url, prefix = shared_redis_url(), unique_prefix()
    database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_to_head(database_url)
    database = Database(database_url)
    key = create_tenant_with_key(database, "acme", requests_per_minute=PER_MINUTE)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {
        "BILLING_DATABASE_URL": database_url,
        "GATEWAY_NODES": node_url,
        "GATEWAY_NODE_SECRET": NODE_SECRET,
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_RATE_LIMIT_KEY_PREFIX": prefix,
        # Not an outage test: a loaded machine must not turn a slow limiter call into one
        # (the default 0.5 s would admit that request under the outage policy).
        "GATEWAY_REDIS_SOCKET_TIMEOUT_SECONDS": "10",
    }
    log = tmp_path / "gateway.log"

    async def fire() -> list[httpx.Response]:
        # Not audio: an admitted request is refused with 400 right after the limiter.
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(timeout=60) as client:  # a connection each
                return await client.post(
                    f"{url}/v1/audio/transcriptions",
                    headers={"Authorization": f"Bearer {key}"},
                    files={"file": ("a.wav", b"not audio at all", "audio/wav")},
                    data={"model": "whisper-1"},
                )

        return await asyncio.gather(*(send() for _ in range(REQUESTS)))

    try:
        with running(
            ["gateway", "--port", str(port), "--workers", "2"],
            environment,
            f"{url}/health/ready",
            log,
        ):
            responses = asyncio.run(fire())
            # Each scrape on a connection of its own: whichever worker answers counts all.
            scrapes = [
                transcription_requests(httpx.get(f"{url}/metrics", timeout=30).text)
                for _ in range(6)
            ]
    finally:
        delete_prefixed(redis_url, prefix)
    workers = set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))
    assert len(workers) == 2
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {400: PER_MINUTE, 429: REQUESTS - PER_MINUTE}
    for response in responses:
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert usage_rows(database) == []
    assert scrapes == [REQUESTS] * 6
    database.dispose()


def transcription_requests(exposition: str) -> float:
    """``asrgw_requests_total`` of the transcription route, over every status and code."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if (
                sample.name == "asrgw_requests_total"
                and sample.labels.get("route") == "/v1/audio/transcriptions"
            ):
                total += sample.value
    return total

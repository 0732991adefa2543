"""Two real gateway processes share one key's per-minute limit through Redis."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billing.db import Database
from billing.migrate import upgrade_to_head
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running
from tests.fixtures.redis import delete_prefixed, shared_redis_url, unique_prefix

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REQUESTS = 100
PER_MINUTE = 30
WAVE = 20
DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    url = shared_redis_url()
    prefix = unique_prefix()
    yield url, prefix
    delete_prefixed(url, prefix)


def test_two_replicas_admit_exactly_the_limit(
    node_url: str, postgres_url: str, redis_prefix: tuple[str, str], tmp_path: Path
) -> None:
    redis_url, prefix = redis_prefix
    upgrade_to_head(postgres_url)
    database = Database(postgres_url)
    key = create_tenant_with_key(database, "acme", requests_per_minute=PER_MINUTE)
    environment = {
        "BILLING_DATABASE_URL": postgres_url,
        "GATEWAY_NODES": node_url,
        "GATEWAY_NODE_SECRET": NODE_SECRET,
        "GATEWAY_MIGRATE_ON_START": "false",
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_RATE_LIMIT_KEY_PREFIX": prefix,
        # Not an outage test: a loaded machine must not turn a slow limiter call into one
        # (the default 0.5 s would admit that request under the outage policy).
        "GATEWAY_REDIS_SOCKET_TIMEOUT_SECONDS": "10",
    }
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]

    async def fire() -> list[tuple[str, httpx.Response]]:
        # Not audio: an admitted request is refused with 400 right after the limiter, which
        # keeps a hundred requests cheap; what is counted is admitted versus 429.
        async with httpx.AsyncClient(timeout=60) as client:

            async def send(url: str) -> tuple[str, httpx.Response]:
                response = await client.post(
                    f"{url}/v1/audio/transcriptions",
                    headers={"Authorization": f"Bearer {key}"},
                    files={"file": ("speech.wav", b"not audio at all", "audio/wav")},
                    data={"model": "whisper-1"},
                )
                return url, response

            # Waves of twenty, half to each replica: the first is admitted whole, the second
            # races both replicas for the last ten places, the rest find the window full.
            sent: list[tuple[str, httpx.Response]] = []
            for _ in range(REQUESTS // WAVE):
                sent += await asyncio.gather(*(send(urls[i % 2]) for i in range(WAVE)))
            return sent

    try:
        with (
            running(
                ["gateway", "--port", str(ports[0])],
                environment,
                f"{urls[0]}/health/live",
                tmp_path / "gateway-a.log",
            ),
            running(
                ["gateway", "--port", str(ports[1])],
                environment,
                f"{urls[1]}/health/live",
                tmp_path / "gateway-b.log",
            ),
        ):
            sent = asyncio.run(fire())

        admitted = [(url, response) for url, response in sent if response.status_code != 429]
        refused = [response for _, response in sent if response.status_code == 429]
        assert len(admitted) == PER_MINUTE
        assert len(refused) == REQUESTS - PER_MINUTE
        # Both replicas admitted requests, yet together no more than one limit's worth.
        assert all(count >= WAVE // 2 for count in Counter(url for url, _ in admitted).values())
        assert set(Counter(url for url, _ in admitted)) == set(urls)
        for _, response in admitted:
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "invalid_audio"
            assert response.headers["x-ratelimit-limit-requests"] == str(PER_MINUTE)
        remaining = sorted(
            int(response.headers["x-ratelimit-remaining-requests"]) for _, response in admitted
        )
        assert remaining[0] == 0
        for response in refused:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert response.json()["error"]["type"] == "requests"
            assert 1 <= int(response.headers["retry-after"]) <= 60
            assert response.headers["x-ratelimit-limit-requests"] == str(PER_MINUTE)
            assert response.headers["x-ratelimit-remaining-requests"] == "0"
            assert DURATION.match(response.headers["x-ratelimit-reset-requests"])
        assert usage_rows(database) == []
    finally:
        database.dispose()

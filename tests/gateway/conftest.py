from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from billing.config import BillingSettings
from billing.db import Database
from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import create_tenant_with_key
from tests.fixtures.redis import delete_prefixed, shared_redis_url, unique_prefix

MAX_UPLOAD_BYTES = 2 * 1024 * 1024


@dataclass
class Gateway:
    client: TestClient
    database: Database
    key: str

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


def gateway_settings(node_urls: str, **overrides: object) -> GatewaySettings:
    return GatewaySettings(
        nodes=node_urls,
        node_secret=NODE_SECRET,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def gateway(node_url: str, database: Database) -> Iterator[Gateway]:
    """The gateway app in-process, on a real ledger, forwarding to a real node process."""
    key = create_tenant_with_key(database, "acme", price_per_1k_tokens_micros=20_000)
    app = create_app(gateway_settings(node_url), BillingSettings(database_url=database.url))
    with TestClient(app) as client:
        yield Gateway(client=client, database=database, key=key)


@pytest.fixture(params=["memory", "redis"])
def limit_store(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Gateway settings for the rate-limit stores: process memory, or the shared Redis under a
    prefix of this test's own (deleted afterwards)."""
    if request.param == "memory":
        yield {}
        return
    url = shared_redis_url()
    prefix = unique_prefix()
    yield {"redis_url": url, "rate_limit_key_prefix": prefix}
    delete_prefixed(url, prefix)

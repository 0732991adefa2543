"""An in-process gateway for admin API tests: no inference node is needed to administer."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from billing.config import BillingSettings
from billing.db import Database
from gateway.admin.auth import Scope, mint_token
from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.fixtures.processes import free_port

ADMIN_SECRET = "test-admin-secret-of-at-least-thirty-two-characters"


def admin_settings(**overrides: Any) -> GatewaySettings:
    # No node listens at this address: the admin API never needs one.
    values: dict[str, Any] = {
        "nodes": f"http://127.0.0.1:{free_port()}",
        "admin_jwt_secret": ADMIN_SECRET,
    }
    return GatewaySettings(**(values | overrides))


def token(
    settings: GatewaySettings,
    scopes: Iterable[Scope] = tuple(Scope),
    *,
    subject: str = "alice@example.com",
    ttl_seconds: int = 300,
) -> str:
    return mint_token(settings, subject, scopes, ttl_seconds=ttl_seconds, now=time.time())


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@contextmanager
def admin_client(database: Database, settings: GatewaySettings) -> Iterator[TestClient]:
    app = create_app(settings, BillingSettings(database_url=database.url))
    with TestClient(app) as client:
        yield client

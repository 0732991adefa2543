"""Driving the console over HTTP as a browser would: forms, cookies and their CSRF tokens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi.testclient import TestClient

from billing.config import BillingSettings
from billing.db import Database
from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.console.users.service import create_user
from tests.fixtures.factories import TEST_ACTOR
from tests.gateway.admin_client import admin_settings

PASSWORD = "correct horse battery staple"
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_settings(**overrides: Any) -> GatewaySettings:
    # The database fixture has migrated the ledger already.
    defaults = {"console_secure_cookies": False, "migrate_on_start": False}
    return admin_settings(**(defaults | overrides))


def add_user(database: Database, username: str, role: str, password: str = PASSWORD) -> None:
    with database.transaction() as session:
        create_user(session, username, role, password, actor=TEST_ACTOR)


def csrf_of(page: httpx.Response) -> str:
    found = CSRF_FIELD.search(page.text)
    assert found is not None, page.text
    return found.group(1)


def sign_in(
    client: TestClient, username: str, password: str = PASSWORD, **extra: str
) -> httpx.Response:
    # A fresh browser tab: a signed-in admin would be sent on from the sign-in page.
    client.cookies.pop("asrgw_console_session", None)
    form = client.get("/console/sign-in", headers=HTML)
    return client.post(
        "/console/sign-in",
        data={"username": username, "password": password, "csrf_token": csrf_of(form), **extra},
        headers=HTML,
        follow_redirects=False,
    )


def signed_in_token(client: TestClient, page: str = "/console/tenants") -> str:
    """The session's CSRF token, read from a page's forms."""
    return csrf_of(client.get(page, headers=HTML))


@contextmanager
def console_client(database: Database, settings: GatewaySettings) -> Iterator[TestClient]:
    app = create_app(settings, BillingSettings(database_url=database.url))
    with TestClient(app) as client:
        yield client

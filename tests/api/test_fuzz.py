"""Schema fuzzing: the gateway's own ``/openapi.json`` against the app itself.

schemathesis generates requests from the document for three surfaces (the customer API with a
valid API key, the admin API with a valid admin token holding every scope, and every operation
without credentials) and checks each response: no 5xx, a status the operation documents, a
documented content type, a body that matches the documented schema. The app runs in-process
over ASGI, on a SQLite ledger, with the node stand-in answering over an in-process transport
(no delay), so nothing here depends on timing. Hypothesis is derandomized: the same requests
every run. A failure prints schemathesis' minimal reproducing request (as a curl command).

Afterwards the ledger must reconcile exactly, whatever the fuzzer did to it (it may create
tenants and plans, change prices, add credit, finalize invoices, drain nodes).
"""

from __future__ import annotations

import io
import wave
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python.asgi import ASGIClient, shutdown_lifespans

from billing.config import BillingSettings
from billing.db import Database
from billing.keys.service import create_api_key
from billing.migrate import upgrade_to_head
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.reconcile.service import reconcile
from billing.tenants.service import create_tenant
from gateway.admin.auth import Scope, mint_token
from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.conftest import NODE_SECRET
from tests.fixtures import standin_node
from tests.fixtures.factories import TEST_ACTOR, create_tenant_with_key

ADMIN_SECRET = "fuzz-admin-secret-of-at-least-thirty-two-characters"
NODE_URL = "http://standin-node:8001"
BASE_URL = "http://testserver"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CUSTOMER_PATHS = r"^/(v1/|asr|detect-language|api/)"
ADMIN_PATHS = r"^/admin/"
# The example of the key-prefix path parameter (gateway/admin/deps.py), swapped for a real key.
KEY_PREFIX_EXAMPLE = "3f9a0c1b2d4e"
UNIQUE_FIELDS = {
    ("POST", "/admin/plans"): "name",
    ("POST", "/admin/tenants"): "name",
    ("POST", "/admin/tenants/{name}/credits"): "idempotency_key",
}
PROTECTED_PREFIXES = ("/v1/", "/asr", "/detect-language", "/api/", "/admin/")
# Examples per operation and phase: some 11,000 requests in all, under two minutes on two cores.
FUZZ_SETTINGS = settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

requests_sent: Counter[str] = Counter()


class Fuzzed:
    def __init__(
        self,
        client: ASGIClient,
        database: Database,
        api_key: str,
        admin_token: str,
        key_prefix: str,
    ) -> None:
        self.client = client
        self.database = database
        self.api_key = api_key
        self.admin_token = admin_token
        # A key of its own for the admin surface to rotate and revoke.
        self.key_prefix = key_prefix


def gateway_settings() -> GatewaySettings:
    return GatewaySettings(
        nodes=NODE_URL,
        node_secret=NODE_SECRET,
        admin_jwt_secret=ADMIN_SECRET,
        default_model=standin_node.MODEL,
    )


# The document of an app that is never started: building it opens nothing.
schema = schemathesis.openapi.from_dict(create_app(gateway_settings()).openapi())


def make_unique(case: schemathesis.Case, serial: int) -> None:
    """Give a create its own name (and a credit its own idempotency key), so that the values
    schemathesis varies reach the database write rather than stopping at 409 because an
    earlier case took the name."""
    field = UNIQUE_FIELDS.get((case.method.upper(), case.operation.path))
    body = case.body
    if field is None or not isinstance(body, dict):
        return
    value = body.get(field)
    if isinstance(value, str) and 1 <= len(value.strip()) <= 48:
        case.body = {**body, field: f"{value}-{serial}"}


def tone_wav(seconds: float = 1.0) -> bytes:
    """A 16 kHz mono 16-bit WAV of silence: audio the gateway probes and bills."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16_000)
        writer.writeframes(b"\x00\x00" * int(16_000 * seconds))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("STANDIN_DELAY_MS", "0,0")
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'ledger.db'}"
    upgrade_to_head(url)
    database = Database(url)
    api_key = create_tenant_with_key(database, "acme", price_per_1k_tokens_micros=20_000)
    with database.transaction() as session:
        # The document's examples name tenant acme and plan standard (the default plan, made
        # with the first tenant that names none): requests built from them reach real rows.
        create_tenant(session, "globex", actor=TEST_ACTOR)
        key_prefix = create_api_key(
            session, "acme", name="admin-target", actor=TEST_ACTOR
        ).key.prefix
    settings_ = gateway_settings()
    app = create_app(
        settings_,
        BillingSettings(database_url=url),
        transport=httpx.ASGITransport(app=standin_node.app),
    )
    admin_token = mint_token(settings_, "fuzzer", tuple(Scope), ttl_seconds=3600)
    try:
        with ASGIClient(app) as client:
            yield Fuzzed(client, database, api_key, admin_token, key_prefix)
    finally:
        # The app's lifespan, started by schemathesis' ASGI client, ends with the module.
        shutdown_lifespans()
        database.dispose()
        monkeypatch.undo()


def test_a_billed_request_before_fuzzing(fuzzed: Fuzzed) -> None:
    """One real charge in the ledger, so reconciliation has money to check."""
    response = fuzzed.client.post(
        "/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {fuzzed.api_key}"},
        files={"file": ("tone.wav", tone_wav(), "audio/wav")},
        data={"model": standin_node.MODEL},
    )
    assert response.status_code == 200, response.text
    assert int(response.headers["x-billing-cost-micros"]) >= 0
    assert response.json()["text"].startswith("transcript ")


@schema.include(path_regex=CUSTOMER_PATHS).parametrize()
@FUZZ_SETTINGS
def test_customer_api(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    requests_sent["customer"] += 1
    case.call_and_validate(
        session=fuzzed.client,
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {fuzzed.api_key}"},
        checks=CHECKS,
    )


@schema.include(path_regex=ADMIN_PATHS).parametrize()
@FUZZ_SETTINGS
def test_admin_api(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    requests_sent["admin"] += 1
    if (case.path_parameters or {}).get("prefix") == KEY_PREFIX_EXAMPLE:
        case.path_parameters = {**(case.path_parameters or {}), "prefix": fuzzed.key_prefix}
    make_unique(case, requests_sent["admin"])
    case.call_and_validate(
        session=fuzzed.client,
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {fuzzed.admin_token}"},
        checks=CHECKS,
    )


@schema.parametrize()
@FUZZ_SETTINGS
def test_without_credentials(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    requests_sent["unauthenticated"] += 1
    case.headers = {
        name: value
        for name, value in (case.headers or {}).items()
        if name.lower() not in {"authorization", "x-api-key"}
    }
    response = case.call_and_validate(session=fuzzed.client, base_url=BASE_URL, checks=CHECKS)
    protected = case.operation.path.startswith(PROTECTED_PREFIXES)
    if protected and case.method.upper() == case.operation.method.upper():
        # Refused for want of credentials, or before they are looked at: a malformed body
        # (400) or one over the upload cap (413). Never an answer.
        assert response.status_code in {400, 401, 413}, (
            f"{case.operation.label} answered {response.status_code} without credentials"
        )
    elif protected:
        # schemathesis' probe of a method the path does not have.
        assert response.status_code == 405


def test_the_ledger_reconciles_after_fuzzing(
    fuzzed: Fuzzed, record_property: pytest.RecordProperty, capsys: pytest.CaptureFixture[str]
) -> None:
    for surface in ("customer", "admin", "unauthenticated"):
        record_property(f"fuzz_requests_{surface}", requests_sent[surface])
    with capsys.disabled():
        print(  # noqa: T201
            "\nschema fuzzing, generated requests: "
            + ", ".join(f"{surface} {count}" for surface, count in sorted(requests_sent.items()))
        )
    assert all(requests_sent[surface] > 0 for surface in ("customer", "admin", "unauthenticated"))
    with fuzzed.database.transaction() as session:
        findings = reconcile(session, billing_period(utcnow()))
    problems = [finding for finding in findings if not finding.ok]
    assert findings
    assert problems == []

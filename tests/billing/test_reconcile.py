"""asrgw admin reconcile: silent agreement after real traffic, a readable diff when anything
drifts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from billing.config import BillingSettings
from billing.credits.service import add_credit
from billing.db import Database
from billing.keys.service import authenticate
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.reconcile.service import reconcile
from billing.reservations.service import reserve, settle
from billing.usage.schemas import BillableTranscription
from gateway.app import create_app
from tests.fixtures.factories import (
    TEST_ACTOR,
    bill,
    create_tenant_with_key,
    returned,
    usage_rows,
)
from tests.fixtures.processes import asrgw
from tests.gateway.conftest import gateway_settings


def traffic(node_url: str, database: Database, audio: bytes) -> None:
    key = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=1_000_000)
    create_tenant_with_key(database, "idle")
    app = create_app(gateway_settings(node_url), BillingSettings(database_url=database.url))
    with TestClient(app) as client:
        for _ in range(2):
            response = client.post(
                "/v1/audio/transcriptions",
                headers={"Authorization": f"Bearer {key}"},
                files={"file": ("a.wav", audio)},
                data={"model": "whisper-1"},
            )
            assert response.status_code == 200


def test_traffic_reconciles_then_drift_is_reported(
    node_url: str, database: Database, weather_wav: Path
) -> None:
    traffic(node_url, database, weather_wav.read_bytes())
    period = billing_period(utcnow())
    env = {"BILLING_DATABASE_URL": database.url}
    assert (
        asrgw("admin", "invoice", "finalize", "acme", "--period", period, env=env).returncode == 0
    )
    clean = asrgw("admin", "reconcile", "--period", period, env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "all reconcile" in clean.stdout

    # A response whose charge was never recorded as returned, and an account total that drifted.
    first = usage_rows(database)[0]
    with database.engine.begin() as connection:
        connection.execute(
            text("DELETE FROM returned_charges WHERE request_id = :id"), {"id": first.request_id}
        )
        connection.execute(text("UPDATE tenant_accounts SET spent_micros = spent_micros + 7"))
    drifted = asrgw("admin", "reconcile", "--period", period, env=env)
    assert drifted.returncode == 1
    assert "do not reconcile" in drifted.stderr
    report = drifted.stdout
    assert f"billed but never returned ({first.request_id})" in report
    spent_line = next(
        line for line in report.splitlines() if "acme" in line and "account spent" in line
    )
    assert "MISMATCH" in spent_line
    assert " 7 " in f" {spent_line} "


def failing_checks(database: Database) -> dict[str, str]:
    with database.transaction() as session:
        findings = reconcile(session, billing_period(utcnow()))
    return {finding.check: finding.detail for finding in findings if not finding.ok}


class TestReturnedChargesAreEvidence:
    def test_a_settlement_alone_is_billed_but_never_returned(self, database: Database) -> None:
        # The settlement writes the ledger row only; what the client was told is recorded by
        # whoever built the answer. Without it, reconcile has no evidence the client got it.
        secret = create_tenant_with_key(database, "acme")
        with database.transaction() as session:
            caller = authenticate(session, secret)
            reserve(session, "req_unsent", caller, 2_000, ttl=timedelta(minutes=5))
        with database.transaction() as session:
            charge = settle(
                session,
                BillableTranscription(
                    request_id="req_unsent",
                    caller=caller,
                    model="m",
                    audio_ms=2_000,
                    transcript="hello",
                ),
            )
        assert failing_checks(database) == {
            "returned": "mismatch: 1 billed but never returned (req_unsent)"
        }
        with database.transaction() as session:
            returned(session, caller.tenant_id, charge)
        assert failing_checks(database) == {}

    def test_a_charge_told_with_other_numbers_is_reported(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme")
        with database.transaction() as session:
            caller = authenticate(session, secret)
        charge = bill(database, caller, "req_told", "hello")
        with database.engine.begin() as connection:
            connection.execute(
                text("UPDATE returned_charges SET cost_micros = cost_micros + 1"),
            )
        assert failing_checks(database) == {
            "returned": f"mismatch: 1 returned with other numbers ({charge.request_id})"
        }


class TestLimitsOnTheTotals:
    def test_credit_taken_below_what_was_spent_is_reported(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=5_000)
        with database.transaction() as session:
            caller = authenticate(session, secret)
        charge = bill(database, caller, "req_spent", "hello world")
        assert failing_checks(database) == {}
        with database.transaction() as session:
            # An adjustment after the spending: every total still equals its rows.
            add_credit(
                session,
                "acme",
                -4_900,
                idempotency_key="refund",
                actor=TEST_ACTOR,
                kind="adjustment",
            )
        assert charge.cost_micros > 100
        assert failing_checks(database) == {
            "credit covers spent + reserved": (
                f"mismatch: spent + reserved {charge.cost_micros} of credit 100"
            )
        }

    def test_a_month_past_its_quota_is_reported(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", monthly_token_quota=1_000)
        with database.transaction() as session:
            caller = authenticate(session, secret)
        bill(database, caller, "req_used", "hello world")  # 10 tokens
        with database.transaction() as session:
            reserve(session, "req_open", caller, 1_000, ttl=timedelta(minutes=5))  # 50 held
        assert failing_checks(database) == {}
        with database.engine.begin() as connection:
            connection.execute(text("UPDATE plans SET monthly_token_quota = 40"))
        assert failing_checks(database) == {
            "quota covers used + reserved": "mismatch: used + reserved 60 of quota 40 tokens"
        }

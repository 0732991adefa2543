"""asrgw admin reconcile: silent agreement after real traffic, a readable diff when anything
drifts."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from billing.config import BillingSettings
from billing.db import Database
from billing.models.types import utcnow
from billing.periods import billing_period
from gateway.app import create_app
from tests.fixtures.factories import create_tenant_with_key, usage_rows
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

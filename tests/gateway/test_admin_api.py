"""The admin API end to end: tenants, plans, keys, credit, reports, invoices, audit."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from billing.db import Database
from billing.models import ReturnedCharge
from gateway.cli.admin import admin as admin_cli
from gateway.config import GatewaySettings
from tests.fixtures.factories import bill_at, create_tenant_with_key, usage_rows
from tests.gateway.admin_client import admin_client, admin_settings, bearer, token

NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class Admin:
    client: TestClient
    settings: GatewaySettings
    headers: dict[str, str]
    database: Database

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.headers)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.client.post(path, json=body or {}, headers=self.headers)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.client.patch(path, json=body, headers=self.headers)


@pytest.fixture
def admin(database: Database) -> Iterator[Admin]:
    settings = admin_settings()
    with admin_client(database, settings) as client:
        yield Admin(client, settings, bearer(token(settings)), database)


class TestTenantsPlansKeys:
    def test_onboarding_a_customer(self, admin: Admin) -> None:
        plan = admin.post(
            "/admin/plans",
            {"name": "pro", "price_per_1k_tokens_micros": 15_000, "requests_per_minute": 600},
        )
        assert plan.status_code == 201, plan.text
        assert plan.json()["token_unit"] == "char"
        tenant = admin.post("/admin/tenants", {"name": "acme", "plan": "pro", "prepaid": True})
        assert tenant.status_code == 201
        assert tenant.json()["plan"] == "pro"
        key = admin.post("/admin/keys", {"tenant": "acme", "name": "ci", "expires_in_days": 30})
        assert key.status_code == 201
        secret = key.json()["secret"]
        prefix = key.json()["key"]["prefix"]
        assert secret.startswith(f"sk-asrgw-{prefix}_")
        listed = admin.get("/admin/keys", tenant="acme").json()
        assert [item["prefix"] for item in listed] == [prefix]
        assert secret not in str(listed)

        # The new key works on the customer API until it is revoked.
        customer = {"Authorization": f"Bearer {secret}"}
        assert admin.client.get("/v1/usage", headers=customer).status_code == 200
        revoked = admin.post(f"/admin/keys/{prefix}/revoke")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        assert admin.client.get("/v1/usage", headers=customer).status_code == 401

    def test_credit_is_applied_once_per_idempotency_key(self, admin: Admin) -> None:
        admin.post("/admin/tenants", {"name": "acme", "prepaid": True})
        body = {"amount_micros": 5_000_000, "idempotency_key": "stripe-pi-1", "note": "card"}
        first = admin.post("/admin/tenants/acme/credits", body)
        again = admin.post("/admin/tenants/acme/credits", body)
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json() == again.json()
        clash = admin.post("/admin/tenants/acme/credits", body | {"amount_micros": 1})
        assert clash.status_code == 409
        assert clash.json()["error"]["code"] == "conflict"
        detail = admin.get("/admin/tenants/acme").json()
        assert detail["balance"]["credit_micros"] == 5_000_000
        assert detail["balance"]["available_micros"] == 5_000_000
        assert len(admin.get("/admin/tenants/acme/credits").json()) == 1

    def test_plan_and_tenant_updates(self, admin: Admin) -> None:
        admin.post("/admin/plans", {"name": "pro", "price_per_1k_tokens_micros": 15_000})
        admin.post("/admin/plans", {"name": "scale", "price_per_1k_tokens_micros": 9_000})
        admin.post("/admin/tenants", {"name": "acme", "plan": "pro"})
        updated = admin.patch(
            "/admin/plans/pro", {"monthly_token_quota": 1_000_000, "cache_hit_price_bp": 2_500}
        )
        assert updated.status_code == 200
        assert updated.json()["monthly_token_quota"] == 1_000_000
        lifted = admin.patch("/admin/plans/pro", {"monthly_token_quota": None})
        assert lifted.json()["monthly_token_quota"] is None
        moved = admin.patch("/admin/tenants/acme", {"plan": "scale", "prepaid": True})
        assert moved.json() | {"created_at": None} == {
            "id": moved.json()["id"],
            "name": "acme",
            "plan": "scale",
            "prepaid": True,
            "created_at": None,
        }

    @pytest.mark.parametrize(
        ("method", "path", "body", "status", "code"),
        [
            ("get", "/admin/tenants/nobody", None, 404, "not_found"),
            ("post", "/admin/tenants", {"name": "acme", "plan": "gold"}, 404, "not_found"),
            ("post", "/admin/tenants", {"name": "taken"}, 409, "already_exists"),
            ("post", "/admin/plans", {"name": "p", "price_per_1k_tokens_micros": -1}, 400,
             "invalid_value"),
            ("post", "/admin/plans", {"name": "p"}, 400, "missing_required_parameter"),
            ("patch", "/admin/plans/standard", {"currency": "EUR"}, 400, "invalid_value"),
            ("patch", "/admin/plans/standard", {"max_tokens_per_audio_second": None}, 400,
             "invalid_value"),
            ("post", "/admin/keys", {"tenant": "nobody"}, 404, "not_found"),
            ("post", "/admin/keys/0123456789ab/revoke", None, 404, "not_found"),
            ("post", "/admin/tenants/taken/credits",
             {"amount_micros": -5, "idempotency_key": "k"}, 400, "invalid_value"),
        ],
    )  # fmt: skip
    def test_refusals_use_the_envelope_and_stable_codes(
        self,
        admin: Admin,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        status: int,
        code: str,
    ) -> None:
        admin.post("/admin/tenants", {"name": "taken"})
        response = admin.client.request(method, path, json=body, headers=admin.headers)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code


class TestAudit:
    def test_writes_are_attributed_to_the_token_subject_and_request(self, admin: Admin) -> None:
        bob = bearer(token(admin.settings, subject="bob@example.com"))
        created = admin.client.post("/admin/tenants", json={"name": "acme"}, headers=bob)
        admin.patch("/admin/plans/standard", {"requests_per_minute": 60})
        entries = admin.get("/admin/audit").json()
        assert [(e["actor"], e["action"], e["target_id"]) for e in entries] == [
            ("bob@example.com", "plan.create", "standard"),  # the default plan, made on demand
            ("bob@example.com", "tenant.create", "acme"),
            ("alice@example.com", "plan.update", "standard"),
        ]
        assert entries[1]["request_id"] == created.headers["x-request-id"]
        assert entries[2]["before"]["requests_per_minute"] is None
        assert entries[2]["after"]["requests_per_minute"] == 60
        assert admin.get("/admin/audit", actor="alice@example.com", limit=10).json() == [entries[2]]
        assert admin.get("/admin/audit", after_id=entries[1]["id"]).json() == [entries[2]]

    def test_reads_and_refused_writes_leave_no_entry(self, admin: Admin) -> None:
        admin.get("/admin/tenants")
        admin.post("/admin/tenants", {"name": "acme", "plan": "gold"})  # 404
        assert admin.get("/admin/audit").json() == []


class TestBillingEndpoints:
    @pytest.fixture
    def billed(self, admin: Admin) -> Admin:
        acme = create_tenant_with_key(admin.database, "acme", price_per_1k_tokens_micros=33_333)
        globex = create_tenant_with_key(admin.database, "globex", price_per_1k_tokens_micros=7_001)
        for index in range(4):
            when = NOVEMBER + timedelta(days=index * 9, hours=index)
            bill_at(admin.database, acme, f"a{index}", "the weather is nice" * (index + 1),
                    "m1", when)  # fmt: skip
            bill_at(admin.database, globex, f"g{index}", "hello" * (index + 2), f"m{index % 2}",
                    when)  # fmt: skip
        return admin

    def test_csv_report_parses_and_equals_the_json_totals(self, billed: Admin) -> None:
        window = {"from": "2026-11-01", "to": "2026-12-01", "group_by": "tenant,model"}
        as_json = billed.get("/admin/reports/usage", **window)
        as_csv = billed.get("/admin/reports/usage", **window, format="csv")
        assert as_json.status_code == as_csv.status_code == 200
        assert as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert len(rows) == len(as_json.json()) == 3
        for metric in ("requests", "billed_tokens", "cost_micros"):
            assert sum(int(row[metric]) for row in rows) == sum(
                row[metric] for row in as_json.json()
            )
        by_tenant = billed.get("/admin/reports/usage", **window | {"group_by": "tenant"}).json()
        assert sum(row["cost_micros"] for row in by_tenant) == sum(
            int(row["cost_micros"]) for row in rows
        )

    @pytest.mark.parametrize(
        ("params", "code"),
        [
            ({"from": "2026-11-01", "to": "2026-12-01", "group_by": "colour"}, "invalid_value"),
            ({"from": "2026-12-01", "to": "2026-11-01"}, "invalid_value"),
            ({"from": "yesterday", "to": "2026-11-01"}, "invalid_value"),
            ({"to": "2026-11-01"}, "missing_required_parameter"),
        ],
    )
    def test_bad_report_parameters(self, billed: Admin, params: dict[str, str], code: str) -> None:
        response = billed.get("/admin/reports/usage", **params)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == code

    def test_invoice_draft_finalize_and_immutability(self, billed: Admin) -> None:
        draft = billed.post("/admin/invoices/acme/2026-11/draft")
        assert draft.status_code == 200, draft.text
        assert draft.json()["state"] == "draft"
        assert draft.json()["total_micros"] == sum(
            line["amount_micros"] for line in draft.json()["lines"]
        )
        final = billed.post("/admin/invoices/acme/2026-11/finalize")
        assert final.json()["state"] == "finalized"
        assert final.json()["total_micros"] == draft.json()["total_micros"]
        again = billed.post("/admin/invoices/acme/2026-11/draft")
        assert again.status_code == 409
        assert "finalized" in again.json()["error"]["message"]
        shown = billed.get("/admin/invoices/acme/2026-11").json()
        assert shown == final.json()
        listed = billed.get("/admin/invoices", tenant="acme").json()
        assert [(item["period"], item["state"]) for item in listed] == [("2026-11", "finalized")]

    def test_reconcile(self, billed: Admin) -> None:
        billed.post("/admin/invoices/acme/2026-11/draft")
        report = billed.get("/admin/reconcile", period="2026-11").json()
        assert report["ok"] is True
        assert {f["tenant"] for f in report["findings"]} == {"acme", "globex"}
        assert all(f["difference"] == 0 for f in report["findings"])
        # A charge told to a client with no usage row under it is caught the other way round.
        (row, *_) = usage_rows(billed.database)
        with billed.database.transaction() as session:
            session.add(
                ReturnedCharge(
                    request_id="req_never_billed",
                    tenant_id=row.tenant_id,
                    billed_tokens=row.billed_tokens,
                    cost_micros=row.cost_micros,
                    created_at=NOVEMBER + timedelta(days=3),
                )
            )
        unbilled = billed.get("/admin/reconcile", period="2026-11").json()
        assert unbilled["ok"] is False
        (finding,) = [f for f in unbilled["findings"] if not f["ok"]]
        assert finding["check"] == "returned"
        assert "1 returned but never billed (req_never_billed)" in finding["detail"]


def assert_invalid(response: Any, param: str) -> None:
    """Refused in the envelope, naming the field, never a 500."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_value"
    assert error["param"] == param


class TestBounds:
    """Values past what a column or ``datetime`` holds are refused with 400, never 500."""

    @pytest.fixture
    def acme(self, admin: Admin) -> str:
        assert admin.post("/admin/tenants", {"name": "acme"}).status_code == 201
        key = admin.post("/admin/keys", {"tenant": "acme"})
        assert key.status_code == 201
        return str(key.json()["key"]["prefix"])

    @pytest.mark.parametrize("days", [36_501, 3_000_000, 2**63])
    @pytest.mark.usefixtures("acme")
    def test_key_lifetime(self, admin: Admin, days: int) -> None:
        assert_invalid(
            admin.post("/admin/keys", {"tenant": "acme", "expires_in_days": days}),
            "expires_in_days",
        )

    @pytest.mark.usefixtures("acme")
    def test_the_longest_key_lifetime_is_accepted(self, admin: Admin) -> None:
        response = admin.post("/admin/keys", {"tenant": "acme", "expires_in_days": 36_500})
        assert response.status_code == 201, response.text
        expires_at = datetime.fromisoformat(response.json()["key"]["expires_at"])
        expected = datetime.now(UTC) + timedelta(days=36_500)
        assert abs(expires_at - expected) < timedelta(minutes=5)

    @pytest.mark.parametrize("grace", [90 * 86_400 + 1, 2**63])
    def test_rotation_grace(self, admin: Admin, acme: str, grace: int) -> None:
        response = admin.post(f"/admin/keys/{acme}/rotate", {"grace_seconds": grace})
        assert_invalid(response, "grace_seconds")

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("price_per_1k_tokens_micros", 2**63),
            ("price_per_1k_tokens_micros", -1),
            ("max_tokens_per_audio_second", 2**63),
            ("max_tokens_per_audio_second", 0),
            ("monthly_token_quota", 2**63),
            ("requests_per_minute", 2**31),
            ("concurrency_limit", 2**31),
            ("cache_hit_price_bp", 10_001),
            ("currency", "DOLLARS"),
        ],
    )
    def test_plan_terms(self, admin: Admin, field: str, value: object) -> None:
        body = {"name": "big", "price_per_1k_tokens_micros": 1_000, field: value}
        assert_invalid(admin.post("/admin/plans", body), field)
        if field != "currency":
            assert_invalid(admin.patch("/admin/plans/standard", {field: value}), field)

    @pytest.mark.parametrize("amount", [2**63, -(2**63), 10**12 + 1])
    @pytest.mark.usefixtures("acme")
    def test_credit(self, admin: Admin, amount: int) -> None:
        body = {"amount_micros": amount, "idempotency_key": "k", "kind": "adjustment"}
        assert_invalid(admin.post("/admin/tenants/acme/credits", body), "amount_micros")
        assert admin.get("/admin/tenants/acme/credits").json() == []

    def test_names(self, admin: Admin) -> None:
        assert_invalid(admin.post("/admin/tenants", {"name": "x" * 129}), "name")
        assert_invalid(admin.post("/admin/keys", {"tenant": "x" * 129}), "tenant")
        assert_invalid(admin.post("/admin/nodes", {"url": "http://" + "n" * 200}), "url")

    @pytest.mark.parametrize("period", ["9999-12", "2026-13", "26-11"])
    @pytest.mark.usefixtures("acme")
    def test_periods(self, admin: Admin, period: str) -> None:
        # 9999-12 is a well-formed month whose end datetime cannot hold: the service refuses it.
        for response in (
            admin.get("/admin/reconcile", period=period),
            admin.post(f"/admin/invoices/acme/{period}/finalize"),
        ):
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "invalid_value"

    def test_audit_paging(self, admin: Admin) -> None:
        assert_invalid(admin.get("/admin/audit", after_id=2**63), "after_id")
        assert_invalid(admin.get("/admin/audit", limit=2**63), "limit")
        assert_invalid(admin.get("/admin/audit", since="9999-12-31T23:00:00-05:00"), "since")


class TestCliBounds:
    """``asrgw admin`` refuses the same values with a usage error or the service's message,
    never a traceback."""

    @pytest.mark.parametrize(
        "arguments",
        [
            ["key", "create", "--tenant", "acme", "--expires-in-days", "3000000"],
            ["key", "rotate", "abc", "--grace-seconds", str(2**63)],
        ],
    )
    def test_out_of_range_options(self, sqlite_url: str, arguments: list[str]) -> None:
        result = CliRunner().invoke(admin_cli, arguments, env={"BILLING_DATABASE_URL": sqlite_url})
        assert result.exit_code == 2
        assert "is not in the range" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)

    def test_a_price_past_the_bound(self, sqlite_url: str) -> None:
        result = CliRunner().invoke(
            admin_cli,
            ["plan", "create", "huge", "--price-per-1k-micros", str(2**63)],
            env={"BILLING_DATABASE_URL": sqlite_url},
        )
        assert result.exit_code != 0
        assert "price per 1,000 tokens must be between 0 and 100,000,000" in result.output
        assert isinstance(result.exception, SystemExit)

"""Admin pages: every write goes through the billing services and lands in the audit log."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime

import pytest

from billing.audit.schemas import AuditQuery
from billing.audit.service import find
from billing.db import Database
from billing.errors import InvalidApiKey
from billing.invoices.service import finalize, show_invoice
from billing.keys.service import authenticate, list_api_keys
from billing.periods import billing_period
from billing.tenants.service import tenant_detail
from tests.fixtures.environment import require_tool
from tests.fixtures.factories import TEST_ACTOR, bill, create_tenant_with_key
from tests.gateway.console.client import (
    HTML,
    JSON,
    add_user,
    console_client,
    console_settings,
    sign_in,
    signed_in_token,
)

SECRET = re.compile(r'value="(sk-asrgw-[0-9a-f]{12}_[^"]+)"')


def audit(database: Database, action: str) -> list[dict[str, object]]:
    with database.transaction() as session:
        entries = find(session, AuditQuery(action=action))
    return [entry.model_dump() for entry in entries]


class TestAdminWrites:
    def test_plan_tenant_credit_and_keys_through_the_pages(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            token = signed_in_token(client)

            def post(path: str, **form: str) -> object:
                return client.post(
                    path, data={"csrf_token": token, **form}, headers=HTML, follow_redirects=False
                )

            plan = post("/console/plans", name="pro", price_per_1k_tokens_micros="15000")
            tenant = post("/console/tenants", name="acme", plan="pro", prepaid="true")
            credit_form = client.get("/console/tenants/acme", headers=HTML).text
            key = re.search(r'name="idempotency_key" value="([^"]+)"', credit_form)
            assert key is not None
            credit = post("/console/tenants/acme/credits", amount="12.5", idempotency_key=key[1])
            repeat = post("/console/tenants/acme/credits", amount="12.5", idempotency_key=key[1])
            created = post("/console/tenants/acme/keys", key_name="ci", scopes="audio:transcribe")
            secret = SECRET.search(created.text)  # type: ignore[attr-defined]
            assert secret is not None
            prefix = secret[1][len("sk-asrgw-") :][:12]
            rotated = post(f"/console/keys/{prefix}/rotate", grace_seconds="0")
            new_secret = SECRET.search(rotated.text)  # type: ignore[attr-defined]
            assert new_secret is not None
            new_prefix = new_secret[1][len("sk-asrgw-") :][:12]
            revoked = post(f"/console/keys/{new_prefix}/revoke")
            page = client.get("/console/tenants/acme", headers=HTML).text
            searched = client.get("/console/tenants?q=AC", headers=HTML).text
            missed = client.get("/console/tenants?q=zzz", headers=HTML).text

        assert plan.status_code == 303  # type: ignore[attr-defined]
        assert tenant.headers["location"] == "/console/tenants/acme?notice=tenant-created"  # type: ignore[attr-defined]
        assert credit.headers["location"].endswith("notice=credit-added")  # type: ignore[attr-defined]
        assert repeat.headers["location"].endswith("notice=credit-repeated")  # type: ignore[attr-defined]
        assert "shown this once" in created.text  # type: ignore[attr-defined]
        assert revoked.status_code == 303  # type: ignore[attr-defined]
        with database.transaction() as session:
            detail = tenant_detail(session, "acme")
        assert detail.tenant.plan == "pro"
        assert detail.tenant.prepaid
        assert detail.balance.credit_micros == 12_500_000
        assert "12.500000 USD" in page
        assert 'href="/console/tenants/acme"' in searched
        assert "No tenants match" in missed
        with database.transaction() as session, pytest.raises(InvalidApiKey, match="expired"):
            authenticate(session, secret[1])  # rotated with zero grace: ended at once
        with database.transaction() as session:
            keys = {key.prefix: key for key in list_api_keys(session, "acme")}
        assert [scope.value for scope in keys[new_prefix].scopes] == ["audio:transcribe"]
        assert keys[new_prefix].revoked_at is not None
        for action in ("plan.create", "tenant.create", "credit.add", "key.create", "key.rotate"):
            (entry,) = audit(database, action)
            assert entry["actor"] == "olivia", action
            assert str(entry["request_id"]).startswith("req_")
        assert len(audit(database, "key.revoke")) == 1

    def test_a_refused_write_shows_its_code_and_changes_nothing(self, database: Database) -> None:
        add_user(database, "olivia", "owner")
        create_tenant_with_key(database, "acme")
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            token = signed_in_token(client)
            twice = client.post(
                "/console/tenants", data={"name": "acme", "csrf_token": token}, headers=HTML
            )
            bad_amount = client.post(
                "/console/tenants/acme/credits",
                data={"amount": "1.0000001", "idempotency_key": "k", "csrf_token": token},
                headers=JSON,
            )
        assert twice.status_code == 409
        assert "<code>already_exists</code>" in twice.text
        assert bad_amount.status_code == 400
        assert "at most 6 decimals" in bad_amount.json()["error"]["message"]
        assert audit(database, "credit.add") == []


class TestInvoices:
    def test_draft_finalize_and_a_pdf_equal_to_the_json(self, database: Database) -> None:
        require_tool("pdftotext")
        add_user(database, "olivia", "owner")
        secret = create_tenant_with_key(database, "acme", price_per_1k_tokens_micros=12_345)
        with database.transaction() as session:
            caller = authenticate(session, secret)
        for index, text in enumerate(["the weather is nice today", "hello", "a" * 37]):
            bill(database, caller, f"req-{index}", text, model=f"model-{index % 2}")
        period = billing_period(datetime.now(UTC))
        with console_client(database, console_settings()) as client:
            sign_in(client, "olivia")
            token = signed_in_token(client, "/console/invoices")
            drafted = client.post(
                "/console/invoices",
                data={"tenant": "acme", "period": period, "csrf_token": token},
                headers=HTML,
                follow_redirects=False,
            )
            finalized = client.post(
                f"/console/invoices/acme/{period}/finalize",
                data={"csrf_token": token},
                headers=HTML,
                follow_redirects=False,
            )
            pdf = client.get(f"/console/invoices/acme/{period}/pdf")
            csv = client.get(f"/console/invoices/acme/{period}/csv")
            again = client.post(
                f"/console/invoices/acme/{period}/draft", data={"csrf_token": token}, headers=JSON
            )
        assert (
            drafted.headers["location"] == f"/console/invoices/acme/{period}?notice=invoice-drafted"
        )
        assert finalized.status_code == 303
        assert again.status_code == 409  # a finalized invoice never changes
        with database.transaction() as session:
            invoice = show_invoice(session, "acme", period)
        assert invoice.state == "finalized"
        assert pdf.headers["content-type"] == "application/pdf"
        assert f"invoice-acme-{period}.pdf" in pdf.headers["content-disposition"]
        text = subprocess.run(
            ["pdftotext", "-layout", "-", "-"], input=pdf.content, capture_output=True, check=True
        ).stdout.decode()
        rows = [line.split() for line in text.splitlines() if line.split()]
        for line in invoice.lines:
            amount = f"{line.amount_micros // 1_000_000}.{line.amount_micros % 1_000_000:06d}"
            expected = [
                line.kind,
                line.model,
                line.api_key_prefix,
                str(line.requests),
                str(line.billed_tokens),
                amount,
            ]
            assert expected in rows, (expected, text)
        assert len(invoice.lines) == 2
        total = f"{invoice.total_micros // 1_000_000}.{invoice.total_micros % 1_000_000:06d}"
        assert ["Total", total, "USD"] in rows
        assert f"Total in micro-units: {invoice.total_micros}." in text
        assert invoice.total_micros == sum(line.amount_micros for line in invoice.lines)
        csv_rows = [row.split(",") for row in csv.text.strip().splitlines()]
        assert csv_rows[-1][2] == "total"
        assert int(csv_rows[-1][7]) == invoice.total_micros
        assert len(audit(database, "invoice.finalize")) == 1


class TestNodesAndAudit:
    def test_drain_and_undrain_a_node_and_read_the_audit_log(self, database: Database) -> None:
        add_user(database, "otto", "operator")
        with console_client(database, console_settings()) as client:
            sign_in(client, "otto")
            page = client.get("/console/nodes", headers=HTML).text
            node_id = re.search(r'action="/console/nodes/(node_[0-9a-f]+)/drain"', page)
            assert node_id is not None
            token = signed_in_token(client, "/console/nodes")
            drained = client.post(
                f"/console/nodes/{node_id[1]}/drain",
                data={"csrf_token": token},
                headers=HTML,
                follow_redirects=False,
            )
            after = client.get("/console/nodes", headers=HTML).text
            filtered = client.get("/console/audit?action=node.drain", headers=HTML).text
            none = client.get("/console/audit?actor=nobody", headers=HTML).text
            bad = client.get("/console/audit?since=yesterday", headers=HTML)
        assert drained.headers["location"] == "/console/nodes?notice=node-drained"
        assert f"/console/nodes/{node_id[1]}/undrain" in after
        assert "<code>node.drain</code>" in filtered
        assert "No entries match" in none
        assert bad.status_code == 400
        (entry,) = audit(database, "node.drain")
        assert entry["actor"] == "otto"


def test_finalize_helper_is_the_same_service(database: Database) -> None:
    """The console's invoices are the billing service's: one finalized here shows there."""
    add_user(database, "fiona", "finance")
    create_tenant_with_key(database, "acme")
    period = billing_period(datetime.now(UTC))
    with database.transaction() as session:
        finalize(session, "acme", period, actor=TEST_ACTOR)
    with console_client(database, console_settings()) as client:
        sign_in(client, "fiona")
        page = client.get(f"/console/invoices/acme/{period}", headers=HTML)
    assert "<strong>finalized</strong>" in page.text
    assert "Finalize" not in page.text

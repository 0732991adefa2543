from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from billing.audit.schemas import Actor, AuditQuery
from billing.audit.service import find
from billing.credits.service import add_credit
from billing.db import Database
from billing.errors import InvalidValue
from billing.invoices.service import build_draft, finalize
from billing.keys.service import authenticate, create_api_key, revoke_api_key
from billing.models.types import utcnow
from billing.plans.schemas import PlanLimits
from billing.plans.service import create_plan, update_plan
from billing.tenants.schemas import TenantUpdate
from billing.tenants.service import create_tenant, update_tenant
from tests.fixtures.factories import bill, create_tenant_with_key

ALICE = Actor(name="alice@example.com", request_id="req_audit_1")


def audit_log(database: Database, **filters: object) -> list[dict[str, object]]:
    with database.transaction() as session:
        return [entry.model_dump() for entry in find(session, AuditQuery(**filters))]


class TestAuditLog:
    def test_every_admin_write_is_recorded_with_who_and_what(self, database: Database) -> None:
        with database.transaction() as session:
            create_plan(session, "pro", actor=ALICE, price_per_1k_tokens_micros=10_000)
            create_tenant(session, "acme", plan_name="pro", prepaid=True, actor=ALICE)
            created = create_api_key(session, "acme", name="ci", actor=ALICE)
            add_credit(session, "acme", 5_000_000, idempotency_key="pay-1", actor=ALICE)
            revoke_api_key(session, created.key.prefix, actor=ALICE)
            build_draft(session, "acme", "2026-11", actor=ALICE)
            finalize(session, "acme", "2026-11", actor=ALICE)
        entries = audit_log(database)
        assert [entry["action"] for entry in entries] == [
            "plan.create",
            "tenant.create",
            "key.create",
            "credit.add",
            "key.revoke",
            "invoice.draft",
            "invoice.finalize",
        ]
        assert {entry["actor"] for entry in entries} == {"alice@example.com"}
        assert {entry["request_id"] for entry in entries} == {"req_audit_1"}
        tenant_entry = entries[1]
        assert (tenant_entry["target_type"], tenant_entry["target_id"]) == ("tenant", "acme")
        assert tenant_entry["before"] is None
        assert tenant_entry["after"]["plan"] == "pro"  # type: ignore[index]
        revoke = entries[4]
        assert revoke["before"]["revoked_at"] is None  # type: ignore[index]
        assert revoke["after"]["revoked_at"] is not None  # type: ignore[index]
        finalized = entries[6]
        assert finalized["before"]["state"] == "draft"  # type: ignore[index]
        assert finalized["after"]["state"] == "finalized"  # type: ignore[index]
        # The key's secret is shown once to its creator and never lands in the log.
        assert created.secret not in json.dumps(entries, default=str)

    def test_updates_keep_before_and_after_and_no_op_updates_record_nothing(
        self, database: Database
    ) -> None:
        with database.transaction() as session:
            create_plan(session, "pro", actor=ALICE, price_per_1k_tokens_micros=10_000)
            create_plan(session, "scale", actor=ALICE, price_per_1k_tokens_micros=8_000)
            create_tenant(session, "acme", plan_name="pro", actor=ALICE)
        with database.transaction() as session:
            update_plan(
                session,
                "pro",
                PlanLimits(price_per_1k_tokens_micros=12_000, monthly_token_quota=None),
                actor=ALICE,
            )
            update_plan(session, "pro", PlanLimits(price_per_1k_tokens_micros=12_000), actor=ALICE)
            update_tenant(session, "acme", TenantUpdate(plan="scale"), actor=ALICE)
            update_tenant(session, "acme", TenantUpdate(plan="scale"), actor=ALICE)
        plan_updates = audit_log(database, action="plan.update")
        assert len(plan_updates) == 1
        assert plan_updates[0]["before"]["price_per_1k_tokens_micros"] == 10_000  # type: ignore[index]
        assert plan_updates[0]["after"]["price_per_1k_tokens_micros"] == 12_000  # type: ignore[index]
        tenant_updates = audit_log(database, target_type="tenant", action="tenant.update")
        assert [(u["before"]["plan"], u["after"]["plan"]) for u in tenant_updates] == [  # type: ignore[index]
            ("pro", "scale")
        ]

    def test_a_refused_change_leaves_no_entry(self, database: Database) -> None:
        with database.transaction() as session:
            create_plan(session, "pro", actor=ALICE, price_per_1k_tokens_micros=10_000)
        with pytest.raises(InvalidValue), database.transaction() as session:
            update_plan(session, "pro", PlanLimits(max_tokens_per_audio_second=0), actor=ALICE)
        assert [entry["action"] for entry in audit_log(database)] == ["plan.create"]

    def test_a_repeated_top_up_is_recorded_once(self, database: Database) -> None:
        with database.transaction() as session:
            create_tenant(session, "acme", prepaid=True, actor=ALICE)
        for _ in range(3):
            with database.transaction() as session:
                add_credit(session, "acme", 1_000, idempotency_key="pay-9", actor=ALICE)
        assert len(audit_log(database, action="credit.add")) == 1

    def test_query_filters_and_pages(self, database: Database) -> None:
        bob = Actor(name="bob")
        with database.transaction() as session:
            for index in range(5):
                create_tenant(session, f"t{index}", actor=ALICE if index % 2 else bob)
        assert len(audit_log(database, actor="bob", action="tenant.create")) == 3
        first_page = audit_log(database, action="tenant.create", limit=2)
        second_page = audit_log(
            database, action="tenant.create", limit=2, after_id=first_page[-1]["id"]
        )
        assert [e["target_id"] for e in first_page + second_page] == ["t0", "t1", "t2", "t3"]
        assert audit_log(database, since=utcnow() + timedelta(minutes=1)) == []
        with pytest.raises(InvalidValue), database.transaction() as session:
            find(session, AuditQuery(limit=0))


class TestInsertOnly:
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE audit_entries SET actor = 'mallory'",
            "DELETE FROM audit_entries",
            "UPDATE usage_events SET cost_micros = 0",
            "DELETE FROM usage_events",
            "UPDATE credit_entries SET amount_micros = 1",
        ],
    )
    def test_the_database_refuses_to_change_written_rows(
        self, database: Database, statement: str
    ) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=10**6)
        with database.transaction() as session:
            caller = authenticate(session, secret)
        bill(database, caller, "req_insert_only", "hello world")
        with pytest.raises(DBAPIError, match="insert-only"), database.transaction() as session:
            session.execute(text(statement))

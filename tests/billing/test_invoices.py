"""Monthly invoices: totals equal the ledger, finalized ones never change, late rows become
adjustments on the next draft."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.db import Database
from billing.errors import Conflict, InvalidValue
from billing.invoices.service import build_draft, finalize, invoice_lines
from billing.keys.service import create_api_key
from billing.migrate import upgrade_to_head
from tests.fixtures.factories import TEST_ACTOR, bill_at, create_tenant_with_key, usage_rows

OCTOBER = datetime(2026, 10, 15, 12, tzinfo=UTC)
NOVEMBER = datetime(2026, 11, 10, 12, tzinfo=UTC)


class TestInvoices:
    def test_draft_lines_by_model_and_key_sum_to_the_month(self, database: Database) -> None:
        first = create_tenant_with_key(database, "acme", price_per_1k_tokens_micros=12_345)
        with database.transaction() as session:
            second = create_api_key(session, "acme", name="second", actor=TEST_ACTOR).secret
        november = [
            bill_at(database, first, "n1", "a" * 31, "m1", NOVEMBER),
            bill_at(database, first, "n2", "b" * 17, "m1", NOVEMBER + timedelta(days=1)),
            bill_at(database, first, "n3", "c" * 5, "m2", NOVEMBER + timedelta(days=2)),
            bill_at(database, second, "n4", "d" * 77, "m1", NOVEMBER + timedelta(days=3)),
        ]
        bill_at(database, first, "o1", "e" * 50, "m1", OCTOBER)
        with database.transaction() as session:
            invoice = build_draft(session, "acme", "2026-11", actor=TEST_ACTOR)
        with database.transaction() as session:
            _same, lines = invoice_lines(session, "acme", "2026-11")
        assert invoice.state == "draft"
        assert invoice.total_micros == sum(november) == sum(line.amount_micros for line in lines)
        assert sorted((line.model, line.requests) for line in lines) == [
            ("m1", 1),
            ("m1", 2),
            ("m2", 1),
        ]
        assert {line.kind for line in lines} == {"usage"}

    def test_a_finalized_invoice_never_changes(self, database: Database) -> None:
        key = create_tenant_with_key(database, "acme")
        bill_at(database, key, "o1", "hello", "m1", OCTOBER)
        with database.transaction() as session:
            frozen = finalize(session, "acme", "2026-10", actor=TEST_ACTOR)
        with database.transaction() as session, pytest.raises(Conflict, match="finalized"):
            build_draft(session, "acme", "2026-10", actor=TEST_ACTOR)
        with database.transaction() as session, pytest.raises(Conflict):
            finalize(session, "acme", "2026-10", actor=TEST_ACTOR)
        # A late row dated in October: October stays as it was; November takes it as an
        # adjustment.
        late = bill_at(database, key, "o2", "late transcript", "m1", OCTOBER + timedelta(days=1))
        on_time = bill_at(database, key, "n1", "november", "m1", NOVEMBER)
        with database.transaction() as session:
            october, _ = invoice_lines(session, "acme", "2026-10")
            november = build_draft(session, "acme", "2026-11", actor=TEST_ACTOR)
        with database.transaction() as session:
            _, lines = invoice_lines(session, "acme", "2026-11")
        assert october.total_micros == frozen.total_micros
        assert october.finalized_at == frozen.finalized_at
        assert november.total_micros == late + on_time
        assert sorted((line.kind, line.amount_micros) for line in lines) == sorted(
            [("adjustment", late), ("usage", on_time)]
        )

    def test_months_do_not_steal_each_others_rows(self, database: Database) -> None:
        key = create_tenant_with_key(database, "acme")
        november = bill_at(database, key, "n1", "november", "m1", NOVEMBER)
        december = bill_at(database, key, "d1", "december", "m1", NOVEMBER + timedelta(days=30))
        with database.transaction() as session:
            later = build_draft(session, "acme", "2026-12", actor=TEST_ACTOR)
            earlier = build_draft(session, "acme", "2026-11", actor=TEST_ACTOR)
        assert (earlier.total_micros, later.total_micros) == (november, december)

    def test_bad_period(self, database: Database) -> None:
        create_tenant_with_key(database, "acme")
        with database.transaction() as session, pytest.raises(InvalidValue, match="month"):
            build_draft(session, "acme", "November", actor=TEST_ACTOR)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    price=st.integers(min_value=0, max_value=10**8),
    transcripts=st.lists(st.integers(min_value=0, max_value=3_000), min_size=1, max_size=8),
)
def test_invoice_total_equals_its_lines_and_the_ledger(price: int, transcripts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/ledger.db"
        upgrade_to_head(url)
        database = Database(url)
        try:
            key = create_tenant_with_key(database, "t", price_per_1k_tokens_micros=price)
            for length in transcripts:
                bill_at(database, key, uuid.uuid4().hex, "x" * length, "m", NOVEMBER)
            with database.transaction() as session:
                invoice = finalize(session, "t", "2026-11", actor=TEST_ACTOR)
            with database.transaction() as session:
                _, lines = invoice_lines(session, "t", "2026-11")
            ledger_total = sum(row.cost_micros for row in usage_rows(database))
            assert invoice.total_micros == sum(line.amount_micros for line in lines)
            assert invoice.total_micros == ledger_total
        finally:
            database.dispose()


def test_cli_draft_finalize_show(database: Database) -> None:
    from tests.fixtures.processes import asrgw

    key = create_tenant_with_key(database, "acme")
    cost = bill_at(database, key, "n1", "the weather is nice today", "m1", NOVEMBER)
    env = {"BILLING_DATABASE_URL": database.url}
    drafted = asrgw("admin", "invoice", "draft", "acme", "--period", "2026-11", env=env)
    finalized = asrgw("admin", "invoice", "finalize", "acme", "--period", "2026-11", env=env)
    again = asrgw("admin", "invoice", "finalize", "acme", "--period", "2026-11", env=env)
    shown = asrgw("admin", "invoice", "show", "acme", "--period", "2026-11", env=env)
    assert drafted.returncode == 0, drafted.stderr
    assert "invoice acme 2026-11: draft" in drafted.stdout
    assert f"total: {cost} micros" in finalized.stdout
    assert again.returncode == 1
    assert "finalized and cannot change" in again.stderr
    assert "2026-11: finalized" in shown.stdout

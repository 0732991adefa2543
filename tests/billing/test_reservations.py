"""Reservations, settlement, credits and quotas, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from billing.credits.service import add_credit
from billing.db import Database
from billing.errors import Conflict, InsufficientQuota, InvalidValue
from billing.keys.schemas import AuthenticatedKey
from billing.keys.service import authenticate
from billing.models import Reservation
from billing.models.types import utcnow
from billing.reservations.service import release, reserve, settle, token_bound
from billing.reservations.sweeper import release_expired
from billing.usage.schemas import BillableTranscription
from billing.usage.service import usage_per_key
from tests.fixtures.factories import TEST_ACTOR, account, bill, create_tenant_with_key, usage_rows


def caller_for(database: Database, secret: str) -> AuthenticatedKey:
    with database.transaction() as session:
        return authenticate(session, secret)


def reservation(database: Database, request_id: str) -> Reservation:
    with database.transaction() as session:
        found = session.get(Reservation, request_id)
        assert found is not None
        return found


class TestSettlement:
    def test_row_snapshots_the_plan_and_counts_tokens(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", price_per_1k_tokens_micros=7_777)
        charge = bill(
            database,
            caller_for(database, secret),
            "req_1",
            "the weather is nice today",
            audio_ms=2_500,
            model="pocketsphinx-en",
        )
        (row,) = usage_rows(database)
        assert row.output_tokens == row.billed_tokens == charge.billed_tokens == 21
        assert row.cost_micros == charge.cost_micros == (21 * 7_777 + 500) // 1000
        assert (row.token_unit, row.price_per_1k_tokens_micros) == ("char", 7_777)
        assert (row.audio_ms, row.cached, row.model) == (2_500, False, "pocketsphinx-en")
        assert reservation(database, "req_1").state == "settled"
        totals = account(database, "acme")
        assert (totals.spent_micros, totals.reserved_micros) == (row.cost_micros, 0)

    def test_settling_twice_bills_once(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        first = bill(database, caller, "req_same", "hello")
        with database.transaction() as session:
            again = settle(
                session,
                BillableTranscription(
                    request_id="req_same",
                    caller=caller,
                    model="m",
                    audio_ms=2_000,
                    transcript="hello",
                ),
            )
        assert again == first
        assert len(usage_rows(database)) == 1
        assert account(database, "acme").spent_micros == first.cost_micros

    def test_request_id_is_unique_in_the_ledger(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        bill(database, caller, "req_dup", "x")
        with pytest.raises(IntegrityError), database.transaction() as session:
            reserve(session, "req_dup", caller, 1_000, ttl=timedelta(minutes=1))

    def test_a_transcript_past_the_bound_is_billed_at_the_bound(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", max_tokens_per_audio_second=2)
        charge = bill(database, caller_for(database, secret), "req_long", "x" * 100, audio_ms=1_500)
        assert charge.output_tokens == 100
        assert charge.billed_tokens == token_bound(1_500, 2) == 3

    def test_release_returns_the_hold_and_bills_nothing(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=10_000)
        caller = caller_for(database, secret)
        with database.transaction() as session:
            held = reserve(session, "req_fail", caller, 3_000, ttl=timedelta(minutes=1))
        assert account(database, "acme").reserved_micros == held.amount_micros > 0
        with database.transaction() as session:
            assert release(session, "req_fail") is True
            assert release(session, "req_fail") is False
        totals = account(database, "acme")
        assert (totals.reserved_micros, totals.spent_micros) == (0, 0)
        assert usage_rows(database) == []


class TestCredit:
    def test_prepaid_tenant_gets_402_past_its_credit(self, database: Database) -> None:
        # 20,000 micros per 1k tokens, 50 tokens/s: 2 s of audio may cost 2,000 micros.
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=5_000)
        caller = caller_for(database, secret)
        with database.transaction() as session:
            reserve(session, "a", caller, 2_000, ttl=timedelta(minutes=1))
            reserve(session, "b", caller, 2_000, ttl=timedelta(minutes=1))
        with database.transaction() as session, pytest.raises(InsufficientQuota, match="credit"):
            reserve(session, "c", caller, 2_000, ttl=timedelta(minutes=1))
        assert account(database, "acme").available_micros == 1_000

    def test_top_up_is_applied_once_per_key(self, database: Database) -> None:
        create_tenant_with_key(database, "acme", prepaid=True)
        with database.transaction() as session:
            _entry, created = add_credit(
                session, "acme", 1_000_000, idempotency_key="inv-7", actor=TEST_ACTOR
            )
        with database.transaction() as session:
            _again, created_again = add_credit(
                session, "acme", 1_000_000, idempotency_key="inv-7", actor=TEST_ACTOR
            )
        assert (created, created_again) == (True, False)
        assert account(database, "acme").credit_micros == 1_000_000
        with database.transaction() as session, pytest.raises(Conflict):
            add_credit(session, "acme", 5, idempotency_key="inv-7", actor=TEST_ACTOR)
        with database.transaction() as session, pytest.raises(InvalidValue):
            add_credit(session, "acme", -5, idempotency_key="neg", actor=TEST_ACTOR)

    def test_concurrent_reservations_never_overdraw(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=20_000)
        caller = caller_for(database, secret)

        def attempt(index: int) -> bool:
            try:
                with database.transaction() as session:
                    reserve(session, f"r{index}", caller, 2_000, ttl=timedelta(minutes=1))
                return True
            except InsufficientQuota:
                return False

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(attempt, range(30)))
        assert sum(outcomes) == 10  # 2,000 micros each against 20,000
        totals = account(database, "acme")
        assert totals.reserved_micros == 20_000
        assert totals.available_micros == 0


class TestQuota:
    def test_monthly_token_quota_counts_reserved_and_used(self, database: Database) -> None:
        secret = create_tenant_with_key(
            database, "acme", monthly_token_quota=200, max_tokens_per_audio_second=50
        )
        caller = caller_for(database, secret)
        bill(database, caller, "q1", "x" * 40, audio_ms=2_000)  # reserves 100, uses 40
        with database.transaction() as session:
            reserve(session, "q2", caller, 2_000, ttl=timedelta(minutes=1))  # 40 + 100 <= 200
        with database.transaction() as session, pytest.raises(InsufficientQuota, match="quota"):
            reserve(session, "q3", caller, 2_000, ttl=timedelta(minutes=1))  # 140 + 100 > 200


class TestSweeper:
    def test_expired_reservations_are_released(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=10_000)
        caller = caller_for(database, secret)
        with database.transaction() as session:
            reserve(session, "stale", caller, 2_000, ttl=timedelta(seconds=1))
            reserve(session, "fresh", caller, 2_000, ttl=timedelta(minutes=10))
        assert release_expired(database, now=utcnow() + timedelta(minutes=1)) == 1
        assert reservation(database, "stale").state == "released"
        assert reservation(database, "fresh").state == "open"
        assert (
            account(database, "acme").reserved_micros
            == reservation(database, "fresh").amount_micros
        )

    def test_a_late_settlement_after_the_sweep_still_bills_once(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=10_000)
        caller = caller_for(database, secret)
        with database.transaction() as session:
            reserve(session, "slow", caller, 2_000, ttl=timedelta(seconds=1))
        release_expired(database, now=utcnow() + timedelta(minutes=1))
        with database.transaction() as session:
            charge = settle(
                session,
                BillableTranscription(
                    request_id="slow", caller=caller, model="m", audio_ms=2_000, transcript="ok"
                ),
            )
        totals = account(database, "acme")
        assert (totals.reserved_micros, totals.spent_micros) == (0, charge.cost_micros)
        assert len(usage_rows(database)) == 1


def test_usage_per_key_sums_rows(database: Database) -> None:
    caller = caller_for(database, create_tenant_with_key(database, "acme", token_unit="word"))
    create_tenant_with_key(database, "idle")
    for index, text in enumerate(["one two", "three four five"]):
        bill(database, caller, f"req_{index}", text, audio_ms=1_000)
    with database.transaction() as session:
        summaries = {summary.tenant: summary for summary in usage_per_key(session)}
    assert summaries["acme"].requests == 2
    assert summaries["acme"].billed_tokens == 5
    assert summaries["acme"].audio_ms == 2_000
    assert summaries["acme"].cost_micros == sum(row.cost_micros for row in usage_rows(database))
    assert (summaries["idle"].requests, summaries["idle"].cost_micros) == (0, 0)

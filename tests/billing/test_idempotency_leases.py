"""Idempotency-Key leases, settlements that store results, holds taken again and late
settlements, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from billing.db import Database
from billing.errors import Conflict, InsufficientQuota
from billing.idempotency.service import (
    Busy,
    Claim,
    Lease,
    Owned,
    Settled,
    claim_steps,
    give_up_steps,
    purge_steps,
    renew_steps,
)
from billing.keys.schemas import AuthenticatedKey
from billing.keys.service import authenticate
from billing.models import IdempotencyRecord, Reservation
from billing.models.types import utcnow
from billing.reservations.repository import KeyCompletion
from billing.reservations.service import (
    Settlement,
    plan_hold,
    reopen_steps,
    reserve,
    settle_request,
)
from billing.reservations.sweeper import release_expired
from billing.statements import run
from billing.usage.schemas import BillableTranscription
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows

LEASE = timedelta(seconds=30)


def caller_for(database: Database, secret: str) -> AuthenticatedKey:
    with database.transaction() as session:
        return authenticate(session, secret)


def claim(
    database: Database,
    lease: Lease,
    request_id: str,
    *,
    fingerprint: str = "f1",
    now: datetime | None = None,
) -> Claim:
    now = now or utcnow()
    with database.transaction() as session:
        dialect = session.connection().dialect.name
        steps = claim_steps(dialect, lease, fingerprint, request_id, now=now, until=now + LEASE)
        return run(session.connection(), steps)


def record(database: Database, tenant_id: int, key: str) -> IdempotencyRecord:
    with database.transaction() as session:
        found = session.get(IdempotencyRecord, (tenant_id, key))
        assert found is not None
        return found


def billable(caller: AuthenticatedKey, request_id: str, text: str) -> BillableTranscription:
    return BillableTranscription(
        request_id=request_id, caller=caller, model="m", audio_ms=2_000, transcript=text
    )


def hold(database: Database, caller: AuthenticatedKey, request_id: str, **kwargs: object) -> None:
    with database.transaction() as session:
        reserve(session, request_id, caller, 2_000, ttl=LEASE, **kwargs)  # type: ignore[arg-type]


def settle(
    database: Database, caller: AuthenticatedKey, request_id: str, text: str, key: str | None
) -> Settlement:
    completion = KeyCompletion(key, f'{{"text": "{text}"}}') if key else None
    with database.transaction() as session:
        return settle_request(session, billable(caller, request_id, text), key=completion)


class TestLeases:
    def test_a_new_key_is_owned_under_the_callers_request_id(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        lease = Lease(caller.tenant_id, "k1", "token-a")
        assert claim(database, lease, "req_a") == Owned("req_a", taken_over=False)
        stored = record(database, caller.tenant_id, "k1")
        assert (stored.state, stored.request_id, stored.lease_token) == (
            "in_progress",
            "req_a",
            "token-a",
        )

    def test_a_live_lease_is_busy_and_a_lapsed_one_is_taken_over(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        start = utcnow()
        claim(database, Lease(caller.tenant_id, "k1", "token-a"), "req_a", now=start)
        busy = claim(database, Lease(caller.tenant_id, "k1", "token-b"), "req_b", now=start)
        assert isinstance(busy, Busy)
        assert busy.request_id == "req_a"
        later = start + LEASE + timedelta(seconds=1)
        taken = claim(database, Lease(caller.tenant_id, "k1", "token-b"), "req_b", now=later)
        # The retry works the key under its original request id.
        assert taken == Owned("req_a", taken_over=True)
        assert record(database, caller.tenant_id, "k1").lease_token == "token-b"

    def test_a_renewed_lease_stays_and_a_lost_one_is_not_renewed(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        start = utcnow()
        first = Lease(caller.tenant_id, "k1", "token-a")
        claim(database, first, "req_a", now=start)
        with database.transaction() as session:
            assert run(session.connection(), renew_steps(first, start + 2 * LEASE))
        between = start + LEASE + timedelta(seconds=1)
        busy = claim(database, Lease(caller.tenant_id, "k1", "token-b"), "req_b", now=between)
        assert isinstance(busy, Busy)
        after = start + 3 * LEASE
        claim(database, Lease(caller.tenant_id, "k1", "token-b"), "req_b", now=after)
        with database.transaction() as session:
            assert not run(session.connection(), renew_steps(first, after + LEASE))

    def test_a_failed_attempt_is_taken_over_at_once(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        first = Lease(caller.tenant_id, "k1", "token-a")
        claim(database, first, "req_a")
        with database.transaction() as session:
            run(session.connection(), give_up_steps(first))
        assert record(database, caller.tenant_id, "k1").state == "failed"
        retry = claim(database, Lease(caller.tenant_id, "k1", "token-b"), "req_b")
        assert retry == Owned("req_a", taken_over=True)

    def test_the_same_key_with_another_request_is_a_conflict(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        claim(database, Lease(caller.tenant_id, "k1", "a"), "req_a", fingerprint="f1")
        with pytest.raises(Conflict):
            claim(database, Lease(caller.tenant_id, "k1", "b"), "req_b", fingerprint="f2")

    def test_keys_are_per_tenant(self, database: Database) -> None:
        acme = caller_for(database, create_tenant_with_key(database, "acme"))
        globex = caller_for(database, create_tenant_with_key(database, "globex"))
        claim(database, Lease(acme.tenant_id, "k1", "a"), "req_a")
        assert claim(database, Lease(globex.tenant_id, "k1", "b"), "req_b") == Owned(
            "req_b", taken_over=False
        )


class TestSettlementStoresTheResult:
    def test_the_settlement_completes_the_key_with_its_result(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        claim(database, Lease(caller.tenant_id, "k1", "a"), "req_a")
        hold(database, caller, "req_a")
        settlement = settle(database, caller, "req_a", "hello", "k1")
        stored = record(database, caller.tenant_id, "k1")
        assert stored.state == "completed"
        assert stored.result == '{"text": "hello"}'
        assert stored.lease_token is None
        assert settlement.stored_result is None
        replay = claim(database, Lease(caller.tenant_id, "k1", "b"), "req_b")
        assert replay == Settled("req_a", '{"text": "hello"}')
        (row,) = usage_rows(database)
        assert row.request_id == "req_a"

    def test_a_second_settlement_answers_the_first_ones_result(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        claim(database, Lease(caller.tenant_id, "k1", "a"), "req_a")
        hold(database, caller, "req_a")
        first = settle(database, caller, "req_a", "hello", "k1")
        second = settle(database, caller, "req_a", "hello there", "k1")
        assert second.charge == first.charge
        assert second.stored_result == '{"text": "hello"}'
        assert len(usage_rows(database)) == 1


class TestHoldTakenAgain:
    def test_a_released_hold_is_taken_again_once(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=10_000)
        caller = caller_for(database, secret)
        hold(database, caller, "req_a")
        held = account(database, "acme").reserved_micros
        released = release_expired(database, now=utcnow() + 2 * LEASE)
        assert released == 1
        again = plan_hold("req_a", caller, 2_000, ttl=LEASE, now=utcnow())
        with database.transaction() as session:
            dialect = session.connection().dialect.name
            state = run(session.connection(), reopen_steps(dialect, caller, again))
        assert state == "released"
        assert account(database, "acme").reserved_micros == held
        with database.transaction() as session:
            rows = session.exec(select(Reservation)).all()
        assert [(row.request_id, row.state) for row in rows] == [("req_a", "open")]

    def test_a_hold_the_credit_no_longer_covers_is_refused(self, database: Database) -> None:
        secret = create_tenant_with_key(
            database, "acme", prepaid=True, credit_micros=120, max_tokens_per_audio_second=1
        )
        caller = caller_for(database, secret)
        hold(database, caller, "req_a")  # 2 tokens: 40 micros
        release_expired(database, now=utcnow() + 2 * LEASE)
        for request_id in ("req_b", "req_c", "req_d"):
            hold(database, caller, request_id)
        again = plan_hold("req_a", caller, 2_000, ttl=LEASE, now=utcnow())
        dialect = database.engine.dialect.name
        with pytest.raises(InsufficientQuota), database.transaction() as session:
            run(session.connection(), reopen_steps(dialect, caller, again))
        assert account(database, "acme").reserved_micros == 120


class TestLateSettlement:
    def test_a_late_settlement_is_billed_from_the_credit_left(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=10_000)
        caller = caller_for(database, secret)
        hold(database, caller, "req_a")
        release_expired(database, now=utcnow() + 2 * LEASE)
        charge = settle(database, caller, "req_a", "hello", None).charge
        totals = account(database, "acme")
        assert (totals.spent_micros, totals.reserved_micros) == (charge.cost_micros, 0)

    def test_a_late_settlement_the_credit_cannot_cover_bills_nothing(
        self, database: Database
    ) -> None:
        # One token per second: a 2 s request holds 2 tokens (40 micros); credit for three.
        secret = create_tenant_with_key(
            database, "acme", prepaid=True, credit_micros=120, max_tokens_per_audio_second=1
        )
        caller = caller_for(database, secret)
        hold(database, caller, "req_a")
        release_expired(database, now=utcnow() + 2 * LEASE)
        # Meanwhile the credit is spent by others.
        for request_id in ("req_b", "req_c", "req_d"):
            hold(database, caller, request_id)
            settle(database, caller, request_id, "hello", None)
        with pytest.raises(InsufficientQuota):
            settle(database, caller, "req_a", "hello", None)
        totals = account(database, "acme")
        assert totals.spent_micros == 120
        assert totals.available_micros == 0
        assert [row.request_id for row in usage_rows(database)] == ["req_b", "req_c", "req_d"]

    def test_a_late_settlement_past_the_quota_bills_nothing(self, database: Database) -> None:
        secret = create_tenant_with_key(
            database, "acme", monthly_token_quota=4, max_tokens_per_audio_second=1
        )
        caller = caller_for(database, secret)
        hold(database, caller, "req_a")
        release_expired(database, now=utcnow() + 2 * LEASE)
        for request_id in ("req_b", "req_c"):
            hold(database, caller, request_id)
            settle(database, caller, request_id, "hello", None)
        with pytest.raises(InsufficientQuota):
            settle(database, caller, "req_a", "hello", None)
        assert len(usage_rows(database)) == 2


class TestRetention:
    def test_old_keys_are_forgotten_and_live_leases_kept(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        start = utcnow()
        claim(database, Lease(caller.tenant_id, "done", "a"), "req_a", now=start)
        hold(database, caller, "req_a")
        settle(database, caller, "req_a", "hello", "done")
        claim(database, Lease(caller.tenant_id, "live", "b"), "req_b", now=start)
        with database.transaction() as session:
            # Both were created before the cut; only the live lease outlasts it.
            run(session.connection(), purge_steps(start + timedelta(seconds=5)))
            keys = [r.key for r in session.exec(select(IdempotencyRecord)).all()]
        assert keys == ["live"]
        assert len(usage_rows(database)) == 1

"""Reservation transitions at their edges and under concurrency, on SQLite and PostgreSQL.

On PostgreSQL a hold and a settlement are each one statement that locks the tenant's account
and re-checks what it changes; these tests drive its refusals, its fallbacks and the races it
must win exactly once. Totals are checked the way ``asrgw admin reconcile`` checks them.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from billing.db import Database
from billing.errors import InsufficientQuota, NotFound
from billing.keys.schemas import AuthenticatedKey
from billing.keys.service import authenticate
from billing.migrate import upgrade_to_head
from billing.models import Reservation, TenantPeriod
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.reconcile.service import reconcile
from billing.reservations.service import release, reserve, settle
from billing.usage.schemas import BillableTranscription, UsageCharge
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows


def caller_for(database: Database, secret: str) -> AuthenticatedKey:
    with database.transaction() as session:
        return authenticate(session, secret)


def billable(caller: AuthenticatedKey, request_id: str, transcript: str) -> BillableTranscription:
    return BillableTranscription(
        request_id=request_id, caller=caller, model="m", audio_ms=2_000, transcript=transcript
    )


def reservations(database: Database) -> dict[str, str]:
    with database.transaction() as session:
        return {row.request_id: row.state for row in session.exec(select(Reservation)).all()}


def totals_disagreeing_with_rows(database: Database) -> list[str]:
    """What reconcile finds wrong with the account and quota totals (empty: all agree)."""
    with database.transaction() as session:
        findings = reconcile(session, billing_period(utcnow()))
    return [
        f"{finding.tenant} {finding.check}: rows say {finding.expected}, total {finding.actual}"
        for finding in findings
        if finding.check.startswith(("account", "quota")) and not finding.ok
    ]


class TestHoldRefusals:
    def test_a_request_larger_than_the_whole_quota_writes_nothing(self, database: Database) -> None:
        # 2 s at 50 tokens/s may produce 100 tokens: more than the month's quota of 60.
        secret = create_tenant_with_key(database, "acme", monthly_token_quota=60)
        caller = caller_for(database, secret)
        with database.transaction() as session, pytest.raises(InsufficientQuota) as refused:
            reserve(session, "big", caller, 2_000, ttl=timedelta(minutes=1))
        assert "up to 100 tokens and 60 of the monthly quota of 60 are left" in str(refused.value)
        assert reservations(database) == {}
        assert account(database, "acme").reserved_micros == 0
        with database.transaction() as session:
            assert session.exec(select(TenantPeriod)).all() == []

    def test_short_credit_is_reported_before_the_quota(self, database: Database) -> None:
        secret = create_tenant_with_key(
            database, "acme", prepaid=True, credit_micros=1_000, monthly_token_quota=60
        )
        caller = caller_for(database, secret)
        with database.transaction() as session, pytest.raises(InsufficientQuota) as refused:
            reserve(session, "big", caller, 2_000, ttl=timedelta(minutes=1))
        assert "may cost up to 0.002000 USD and the remaining credit is 0.001000 USD" in str(
            refused.value
        )

    def test_a_refusal_leaves_the_transaction_usable(self, database: Database) -> None:
        # Holds of 2,000 micros against 5,000: the third is refused, with nothing half-written,
        # and the transaction goes on to commit the other two.
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=5_000)
        caller = caller_for(database, secret)
        with database.transaction() as session:
            reserve(session, "a", caller, 2_000, ttl=timedelta(minutes=1))
            reserve(session, "b", caller, 2_000, ttl=timedelta(minutes=1))
            with pytest.raises(InsufficientQuota, match=r"remaining credit is 0\.001000 USD"):
                reserve(session, "c", caller, 2_000, ttl=timedelta(minutes=1))
            release(session, "a")
            reserve(session, "d", caller, 2_000, ttl=timedelta(minutes=1))
        assert reservations(database) == {"a": "released", "b": "open", "d": "open"}
        assert account(database, "acme").reserved_micros == 4_000
        assert totals_disagreeing_with_rows(database) == []


class TestSettlementEdges:
    def test_settling_without_a_reservation_is_not_found(self, database: Database) -> None:
        caller = caller_for(database, create_tenant_with_key(database, "acme"))
        with database.transaction() as session, pytest.raises(NotFound, match="no reservation"):
            settle(session, billable(caller, "never-reserved", "hello"))
        assert usage_rows(database) == []

    def test_a_tenant_cannot_settle_another_tenants_reservation(self, database: Database) -> None:
        owner = caller_for(database, create_tenant_with_key(database, "acme"))
        other = caller_for(database, create_tenant_with_key(database, "globex"))
        with database.transaction() as session:
            reserve(session, "theirs", owner, 2_000, ttl=timedelta(minutes=1))
        with database.transaction() as session, pytest.raises(NotFound, match="no reservation"):
            settle(session, billable(other, "theirs", "hello"))
        assert reservations(database) == {"theirs": "open"}
        assert usage_rows(database) == []
        assert totals_disagreeing_with_rows(database) == []

    def test_releasing_after_settling_changes_nothing(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=10_000)
        caller = caller_for(database, secret)
        with database.transaction() as session:
            reserve(session, "done", caller, 2_000, ttl=timedelta(minutes=1))
        with database.transaction() as session:
            charge = settle(session, billable(caller, "done", "hello"))
        with database.transaction() as session:
            assert release(session, "done") is False
            assert release(session, "unknown") is False
        totals = account(database, "acme")
        assert (totals.spent_micros, totals.reserved_micros) == (charge.cost_micros, 0)
        assert reservations(database) == {"done": "settled"}


class TestRaces:
    def test_concurrent_holds_never_pass_the_quota(self, database: Database) -> None:
        # 100 tokens each against 1,000 for the month; the month's counter row does not exist
        # yet, so the first holds race to create it.
        secret = create_tenant_with_key(database, "acme", monthly_token_quota=1_000)
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
        assert sum(outcomes) == 10
        with database.transaction() as session:
            (counters,) = session.exec(select(TenantPeriod)).all()
        assert (counters.tokens_reserved, counters.tokens_used) == (1_000, 0)
        assert totals_disagreeing_with_rows(database) == []

    def test_settles_and_releases_racing_bill_each_request_once(self, database: Database) -> None:
        # Every request is settled twice and released once, all at the same time from eight
        # threads: each ends settled with one usage row, and both settles return its charge.
        secret = create_tenant_with_key(database, "acme", prepaid=True, credit_micros=10**9)
        caller = caller_for(database, secret)
        request_ids = [f"req_{index}" for index in range(40)]
        with database.transaction() as session:
            for request_id in request_ids:
                reserve(session, request_id, caller, 2_000, ttl=timedelta(minutes=1))
        work = [(kind, request_id) for request_id in request_ids for kind in ("s", "s", "r")]
        random.Random(7).shuffle(work)

        def run(item: tuple[str, str]) -> tuple[str, UsageCharge | bool]:
            kind, request_id = item
            with database.transaction() as session:
                if kind == "r":
                    return request_id, release(session, request_id)
                return request_id, settle(session, billable(caller, request_id, "x" * 30))

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(run, work))
        charges: dict[str, list[UsageCharge]] = {}
        for request_id, outcome in results:
            if isinstance(outcome, UsageCharge):
                charges.setdefault(request_id, []).append(outcome)
        assert all(len(set(map(repr, found))) == 1 for found in charges.values())
        assert len(charges) == len(request_ids)
        assert reservations(database) == dict.fromkeys(request_ids, "settled")
        rows = usage_rows(database)
        assert sorted(row.request_id for row in rows) == sorted(request_ids)
        totals = account(database, "acme")
        assert totals.spent_micros == sum(row.cost_micros for row in rows)
        assert totals.reserved_micros == 0
        assert totals_disagreeing_with_rows(database) == []


@pytest.mark.postgres
class TestLateSettlementReadsTheMonthUnderItsLock:
    """A settlement whose hold was swept takes its charge only if the quota still covers it.
    It waits for the tenant's lock; what another transaction committed meanwhile counts."""

    def test_a_hold_committed_while_it_waited_is_counted(self, postgres_url: str) -> None:
        upgrade_to_head(postgres_url)
        database = Database(postgres_url)
        try:
            # 1 s at 50 tokens/s holds 50 tokens; the quota takes one hold and a bit.
            secret = create_tenant_with_key(database, "acme", monthly_token_quota=90)
            caller = caller_for(database, secret)
            with database.transaction() as session:
                reserve(session, "swept", caller, 1_000, ttl=timedelta(minutes=5))
            with database.transaction() as session:
                assert release(session, "swept")  # the sweeper gave its hold back
            late = billable(caller, "swept", "x" * 60)  # billed at its bound: 50 tokens
            with (
                Session(database.engine) as blocker,
                ThreadPoolExecutor(max_workers=1) as pool,
            ):
                # Another request holds 50 tokens, its transaction still open (and the
                # tenant's account locked) when the late settlement starts.
                blocker_pid = blocker.execute(text("SELECT pg_backend_pid()")).scalar_one()
                reserve(blocker, "other", caller, 1_000, ttl=timedelta(minutes=5))
                settling = pool.submit(settle_in_its_own_session, database, late)
                try:
                    wait_until_blocked_by(database, blocker_pid)
                finally:
                    blocker.commit()
                with pytest.raises(InsufficientQuota):
                    settling.result(timeout=60)
            assert usage_rows(database) == []
            assert reservations(database) == {"swept": "released", "other": "open"}
            with database.transaction() as session:
                findings = reconcile(session, billing_period(utcnow()))
            assert [f.check for f in findings if not f.ok] == []
        finally:
            database.dispose()


def settle_in_its_own_session(database: Database, late: BillableTranscription) -> UsageCharge:
    with database.transaction() as session:
        return settle(session, late)


def wait_until_blocked_by(database: Database, blocker_pid: int, timeout: float = 60) -> None:
    """Until a backend waits for a lock ``blocker_pid`` holds (a state, not a timing)."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
    deadline = time.monotonic() + timeout
    with database.engine.connect() as watcher:
        while not watcher.execute(query, {"pid": blocker_pid}).scalar_one():
            assert time.monotonic() < deadline, "the settlement never waited for the lock"
            time.sleep(0.02)

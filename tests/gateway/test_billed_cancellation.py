"""A request cancelled while its hold is being written (a gateway shutting down, a stream torn
down) lets the hold finish and then gives it back: the ledger never keeps a hold nobody is
waiting on. On PostgreSQL, where the hold runs on the event loop and a cancellation could
otherwise cut it off mid-statement."""

from __future__ import annotations

import time

import anyio
import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from billing.db import Database
from billing.keys.service import authenticate
from billing.migrate import upgrade_to_head
from billing.models import Reservation, TenantAccount
from gateway.billed.dispatch import Order, RequestBilling, Usage, run_billed
from gateway.billed.leases import LeaseKeeper
from gateway.ledger import Ledger
from inference.protocol import TranscriptionResult
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def blocked_by(database: Database, blocker_pid: int) -> bool:
    query = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
    with database.engine.connect() as watcher:
        return bool(watcher.execute(query, {"pid": blocker_pid}).scalar_one())


def wait_until_blocked_by(database: Database, blocker_pid: int, timeout: float = 60) -> None:
    """Until a backend waits for a lock ``blocker_pid`` holds (a state, not a timing)."""
    deadline = time.monotonic() + timeout
    while not blocked_by(database, blocker_pid):
        assert time.monotonic() < deadline, "the hold never waited for the account lock"
        time.sleep(0.02)


async def never_gone() -> bool:
    return False


async def test_a_hold_cancelled_while_it_waits_for_the_lock_is_given_back(
    postgres_url: str,
) -> None:
    upgrade_to_head(postgres_url)
    database = Database(postgres_url)
    ledger = Ledger(database)
    await ledger.open()
    try:
        secret = create_tenant_with_key(database, "acme")
        with database.transaction() as session:
            caller = authenticate(session, secret)
        produced = anyio.Event()

        async def produce() -> TranscriptionResult:
            produced.set()
            raise AssertionError("cancelled before the node is asked")

        def usage_of(result: TranscriptionResult) -> Usage:
            return Usage(result.text, result.model, 1_000)

        billing = RequestBilling(
            ledger=ledger,
            leases=LeaseKeeper(ledger, 30),
            client_gone=never_gone,
            request_id="req_cancelled",
            caller=caller,
        )
        with Session(database.engine) as blocker:
            # Another transaction has the tenant's account locked: the hold waits for it.
            blocker_pid = blocker.execute(text("SELECT pg_backend_pid()")).scalar_one()
            blocker.exec(
                select(TenantAccount)
                .where(TenantAccount.tenant_id == caller.tenant_id)
                .with_for_update()
            ).one()
            async with anyio.create_task_group() as group:
                group.start_soon(
                    run_billed, billing, Order(1_000, produce, usage_of), TranscriptionResult
                )
                await anyio.to_thread.run_sync(wait_until_blocked_by, database, blocker_pid)
                group.cancel_scope.cancel()  # the request is cancelled mid-hold
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(blocker.commit)
        with database.transaction() as session:
            states = [row.state for row in session.exec(select(Reservation)).all()]
        assert states == ["released"]
        assert not produced.is_set()
        assert usage_rows(database) == []
        assert account(database, "acme").reserved_micros == 0
    finally:
        await ledger.aclose()
        database.dispose()

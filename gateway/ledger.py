"""The request path's access to the ledger: the billing transitions, awaited.

On PostgreSQL the transitions run on the event loop through psycopg's asyncio API
(``billing.aio``), each usual one a single statement in autocommit. SQLite's driver blocks, and
a commit waits for the disk, so there each transition runs in one transaction on a worker
thread. Either way a transition is the same ``billing.statements`` generator the blocking
callers (CLI, job workers, tests) run.

A busy SQLite ("database is locked" after its busy timeout) or an unreachable PostgreSQL raises
``billing.errors.LedgerUnavailable``, which the API answers with 503 and ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import anyio
from sqlalchemy.exc import OperationalError

from billing.aio import AsyncLedger, is_postgres
from billing.db import Database
from billing.errors import LedgerUnavailable, NotFound
from billing.idempotency import service as keys
from billing.keys.schemas import AuthenticatedKey
from billing.models.types import utcnow
from billing.reservations import service as reservations
from billing.reservations.repository import KeyCompletion
from billing.reservations.schemas import Hold
from billing.reservations.service import Settlement
from billing.reservations.statements import usage_row_of
from billing.statements import Fetch, Step, Steps, run, single
from billing.usage import returned
from billing.usage.schemas import BillableTranscription, UsageCharge
from gateway.group_commit import GroupCommit

T = TypeVar("T")


class Ledger:
    def __init__(self, database: Database, *, pool_size: int = 16) -> None:
        self.database = database
        self.dialect = database.engine.dialect.name
        self._aio = (
            AsyncLedger(database.url, pool_size=pool_size) if is_postgres(database.url) else None
        )
        self._returned = GroupCommit(self._record_returned)

    async def open(self) -> None:
        if self._aio is not None:
            await self._aio.open()

    async def aclose(self) -> None:
        if self._aio is not None:
            await self._aio.aclose()

    async def run(self, transition: Callable[[str], Steps[T]], *, atomic: bool = False) -> T:
        """Run ``transition(dialect)``: on the event loop (PostgreSQL; in autocommit unless
        ``atomic``), or in one transaction on a worker thread (SQLite)."""
        if self._aio is not None:
            return await self._aio.run(transition(self.dialect), atomic=atomic)
        return await anyio.to_thread.run_sync(self._run_blocking, transition)

    def _run_blocking(self, transition: Callable[[str], Steps[T]]) -> T:
        try:
            with self.database.transaction() as session:
                return run(session.connection(), transition(self.dialect))
        except OperationalError as error:
            raise LedgerUnavailable(
                f"the ledger database is busy or unreachable: {error.orig}"
            ) from error

    # The transitions of a billed request.

    async def reserve(self, caller: AuthenticatedKey, hold: Hold) -> Hold:
        return await self.run(lambda dialect: reservations.reserve_steps(dialect, caller, hold))

    async def reopen(self, caller: AuthenticatedKey, hold: Hold) -> str | None:
        return await self.run(
            lambda dialect: reservations.reopen_steps(dialect, caller, hold), atomic=True
        )

    async def release(self, request_id: str, tenant_id: int) -> bool:
        now = utcnow()
        return await self.run(
            lambda dialect: reservations.release_steps(dialect, request_id, tenant_id, now)
        )

    async def renew(self, request_id: str, expires_at: datetime) -> bool:
        return await self.run(lambda _: reservations.renew_steps(request_id, expires_at))

    async def settle(
        self, billable: BillableTranscription, key: KeyCompletion | None = None
    ) -> Settlement:
        """The usage row, its returned charge and the key's stored result, in one transaction
        (one statement on PostgreSQL in the usual case)."""
        now = utcnow()
        charge = reservations.charge_of(billable)
        if self._aio is not None:
            fast = reservations.settle_fast_steps(self.dialect, billable, charge, now, key)
            if await self._aio.run(fast):
                return Settlement(charge)
            locked = reservations.settle_locked_steps(self.dialect, billable, now, key)
            return await self._aio.run(locked, atomic=True)

        def settle_blocking() -> Settlement:
            try:
                with self.database.transaction() as session:
                    return reservations.settle_request(session, billable, now=now, key=key)
            except OperationalError as error:
                message = f"the ledger database is busy or unreachable: {error.orig}"
                raise LedgerUnavailable(message) from error

        return await anyio.to_thread.run_sync(settle_blocking)

    async def usage_of(self, request_id: str) -> tuple[UsageCharge, bool]:
        """The ledger's charge of a settled request, and whether it was a cache hit."""
        row = await self.run(
            lambda _: single(Step(usage_row_of(), {"request": request_id}, Fetch.first))
        )
        if row is None:
            raise NotFound(f"no usage row for request {request_id}")
        return UsageCharge.model_validate(row, from_attributes=True), bool(row.cached)

    async def charge_hit(
        self, billable: BillableTranscription, key: KeyCompletion | None = None
    ) -> Settlement:
        """A cache hit's usage row and charge, with no reservation: one statement on
        PostgreSQL (``InsufficientQuota`` when the credit or quota does not cover it)."""
        now = utcnow()
        return await self.run(
            lambda dialect: reservations.charge_hit_steps(dialect, billable, now, key)
        )

    async def record_returned(
        self, request_id: str, tenant_id: int, *, billed_tokens: int, cost_micros: int
    ) -> None:
        """What the client was told ``request_id`` cost (``billing.usage.returned``), committed
        before this returns; the records of concurrent requests share one transaction."""
        charge = returned.Returned(request_id, tenant_id, billed_tokens, cost_micros, utcnow())
        await self._returned.add(charge)

    async def _record_returned(self, charges: list[returned.Returned]) -> None:
        await self.run(
            lambda dialect: returned.record_returned_steps(dialect, charges), atomic=True
        )

    # Idempotency-Key leases.

    async def claim_key(
        self, lease: keys.Lease, fingerprint: str, request_id: str, lease_seconds: float
    ) -> keys.Claim:
        now = utcnow()
        until = now + timedelta(seconds=lease_seconds)
        return await self.run(
            lambda dialect: keys.claim_steps(
                dialect, lease, fingerprint, request_id, now=now, until=until
            )
        )

    async def renew_key(self, lease: keys.Lease, until: datetime) -> bool:
        return await self.run(lambda _: keys.renew_steps(lease, until))

    async def give_up_key(self, lease: keys.Lease) -> None:
        await self.run(lambda _: keys.give_up_steps(lease))

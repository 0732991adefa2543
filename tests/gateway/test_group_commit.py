"""Rows that arrive while a transaction runs share the next one; each caller returns only once
its own row is written, and a failed write fails every caller whose row it carried."""

from __future__ import annotations

import anyio
import pytest

from gateway.group_commit import GroupCommit

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Transactions:
    """The write: records each transaction's rows, the first held until ``release``."""

    def __init__(self, failing: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.failing = failing

    async def write(self, rows: list[int]) -> None:
        self.started.set()
        await self.release.wait()
        if self.failing:
            raise RuntimeError("the ledger is unreachable")
        self.batches.append(rows)


async def test_rows_arriving_during_a_transaction_share_the_next() -> None:
    transactions = Transactions()
    commits = GroupCommit(transactions.write)
    returned: list[int] = []

    async def add(row: int) -> None:
        await commits.add(row)
        returned.append(row)

    async with anyio.create_task_group() as group:
        group.start_soon(add, 1)
        await transactions.started.wait()
        for row in (2, 3, 4):
            group.start_soon(add, row)
        await anyio.wait_all_tasks_blocked()
        assert returned == []  # nobody returns before its row is written
        transactions.release.set()
    assert transactions.batches == [[1], [2, 3, 4]]
    assert sorted(returned) == [1, 2, 3, 4]


async def test_a_failed_transaction_fails_every_row_it_carried() -> None:
    transactions = Transactions(failing=True)
    commits = GroupCommit(transactions.write)
    failures: list[str] = []

    async def add(row: int) -> None:
        try:
            await commits.add(row)
        except RuntimeError as error:
            failures.append(f"{row}: {error}")

    async with anyio.create_task_group() as group:
        group.start_soon(add, 1)
        await transactions.started.wait()
        group.start_soon(add, 2)
        await anyio.wait_all_tasks_blocked()
        transactions.release.set()
    assert sorted(failures) == ["1: the ledger is unreachable", "2: the ledger is unreachable"]


async def test_a_caller_cancelled_while_it_waits_still_has_its_row_written() -> None:
    transactions = Transactions()
    commits = GroupCommit(transactions.write)
    caller = anyio.CancelScope()

    async def add_then_leave() -> None:
        with caller:
            await commits.add(1)

    async with anyio.create_task_group() as group:
        group.start_soon(add_then_leave)
        await transactions.started.wait()
        caller.cancel()
    assert caller.cancelled_caught
    transactions.release.set()
    await commits.add(2)
    assert transactions.batches == [[1], [2]]

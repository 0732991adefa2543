"""Writes that share a transaction: each caller waits until the transaction carrying its row
has committed, and the rows that arrive while one transaction runs go together in the next.

A request's answer waits for its own row as before (a crash can lose no row of an answer that
was sent), but under load many requests pay for one commit, which on SQLite is one fsync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._write = write
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, row: T) -> None:
        """Return once ``row`` is committed; raise what its transaction raised."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        # A caller cancelled meanwhile still has its row written; its outcome is then unread.
        written.add_done_callback(lambda future: future.cancelled() or future.exception())
        self._waiting.append((row, written))
        writer = self._writer
        if writer is None or writer.done() or writer.get_loop() is not loop:
            self._writer = loop.create_task(self._write_waiting())
        await asyncio.shield(written)

    async def _write_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._write([row for row, _ in batch])
            except Exception as error:
                for _, written in batch:
                    written.set_exception(error)
            else:
                for _, written in batch:
                    written.set_result(None)

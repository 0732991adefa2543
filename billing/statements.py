"""Ledger transitions written once, run by a blocking or an asyncio driver.

A transition is a generator that yields ``Step``s (a Core statement, its parameters, and what
to read back) and receives each step's result; it returns the transition's outcome. It never
touches a connection itself, so the same logic runs on a SQLAlchemy ``Connection`` inside a
session's transaction (``run``: the CLI, the job workers, tests) and on psycopg's asyncio
connections (``billing.aio``: the request path on PostgreSQL, with no worker thread).

```
def transition(...) -> Steps[bool]:
    row = yield Step(statement, params, Fetch.first)   # the driver executes, sends the row
    return row is not None
```
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import Connection, Executable

T = TypeVar("T")


class Fetch(Enum):
    """What a step reads back from its statement."""

    nothing = "nothing"
    first = "first"  # the first row, or None
    scalar = "scalar"  # the first column of the first row, or None
    all = "all"  # every row


@dataclass(frozen=True, slots=True)
class Step:
    statement: Executable
    params: Mapping[str, Any]
    fetch: Fetch = Fetch.nothing


Steps = Generator[Step, Any, T]


def run(connection: Connection, steps: Steps[T]) -> T:
    """Drive ``steps`` on ``connection`` (inside the caller's transaction)."""
    try:
        step = next(steps)
        while True:
            result = connection.execute(step.statement, step.params)
            if step.fetch is Fetch.first:
                received: Any = result.first()
            elif step.fetch is Fetch.scalar:
                received = result.scalar()
            elif step.fetch is Fetch.all:
                received = result.all()
            else:
                received = None
            step = steps.send(received)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def single(step: Step) -> Steps[Any]:
    """A transition of one step, returning what the step read."""
    received = yield step
    return received

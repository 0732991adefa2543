"""What the client was told a request cost, recorded apart from the ledger row.

The gateway writes one ``returned_charges`` row per billed request once the answer is built
(whole responses: from the ``x-billing-*`` headers of the response itself; streams: from what
was sent), in its own statement after the settlement. Reconciliation compares the two, so a
settlement that billed something other than what reached the client shows up there; a row
recorded twice (a replay of a settled Idempotency-Key) keeps the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import cache

from sqlalchemy import Executable, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from billing.models import ReturnedCharge
from billing.models.types import utcnow
from billing.statements import Step, Steps, run

returned_charges: Table = ReturnedCharge.__table__  # type: ignore[attr-defined]


@cache
def insert_returned(kind: str) -> Executable:
    """One returned charge; nothing when the request has one already."""
    insert = postgresql.insert if kind == "postgresql" else sqlite.insert
    return insert(returned_charges).on_conflict_do_nothing(index_elements=["request_id"])


@dataclass(frozen=True, slots=True)
class Returned:
    """One charge as the client was told it."""

    request_id: str
    tenant_id: int
    billed_tokens: int
    cost_micros: int
    created_at: datetime


def record_returned_steps(dialect: str, charges: Sequence[Returned]) -> Steps[None]:
    """Record ``charges`` (run them in one transaction: one commit for them all)."""
    for charge in charges:
        yield Step(insert_returned(dialect), asdict(charge))


def record_returned(
    session: Session,
    request_id: str,
    tenant_id: int,
    *,
    billed_tokens: int,
    cost_micros: int,
    now: datetime | None = None,
) -> None:
    """The blocking form, inside the caller's transaction."""
    connection = session.connection()
    charge = Returned(request_id, tenant_id, billed_tokens, cost_micros, now or utcnow())
    run(connection, record_returned_steps(connection.dialect.name, [charge]))

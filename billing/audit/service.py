"""The audit log: every admin write, recorded in the same transaction as the write itself, so a
change and its record commit or roll back together.

Actions are ``<target type>.<verb>``: ``plan.create``, ``tenant.update``, ``key.revoke``,
``credit.add``, ``invoice.finalize``, ``node.drain``, …
"""

from __future__ import annotations

import getpass
import json

from pydantic import BaseModel
from sqlmodel import Session

from billing import limits
from billing.audit import repository
from billing.audit.schemas import Actor, AuditEntryPublic, AuditQuery
from billing.errors import InvalidValue
from billing.models import AuditEntry

MAX_PAGE = 1000


def cli_actor() -> Actor:
    """The actor of a command run from a shell on the ledger host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(name=f"cli:{user}")


def snapshot(record: BaseModel | None) -> str | None:
    """A record's public fields as JSON, for ``before``/``after``."""
    if record is None:
        return None
    return json.dumps(record.model_dump(mode="json"), sort_keys=True)


def record(
    session: Session,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str | int,
    *,
    before: BaseModel | None = None,
    after: BaseModel | None = None,
) -> AuditEntry:
    return repository.add_entry(
        session,
        AuditEntry(
            actor=actor.name,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            before=snapshot(before),
            after=snapshot(after),
            request_id=actor.request_id,
        ),
    )


def find(session: Session, query: AuditQuery) -> list[AuditEntryPublic]:
    if not 1 <= query.limit <= MAX_PAGE:
        raise InvalidValue(f"limit must be 1 to {MAX_PAGE}")
    if query.after_id is not None:
        limits.check_range("after_id", query.after_id, 0, limits.MAX_ROW_ID)
    return [AuditEntryPublic.of(entry) for entry in repository.find_entries(session, query)]

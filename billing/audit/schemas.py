"""Who acts, and what the audit log shows of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, field_validator

from billing.models import AuditEntry


def as_utc(value: datetime | None) -> datetime | None:
    """The same instant in UTC, the ledger's zone; a time without a zone is read as UTC. A time
    that leaves ``datetime``'s range once moved to UTC is a ``ValueError``."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


# A time parameter of the admin API, in UTC.
UtcTime = Annotated[datetime, AfterValidator(as_utc)]


class Actor(BaseModel):
    """Whoever makes an admin write: a JWT subject, or ``cli:<os user>``."""

    name: str
    request_id: str | None = None


class AuditEntryPublic(BaseModel):
    id: int
    occurred_at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryPublic:
        assert entry.id is not None
        return cls(
            id=entry.id,
            occurred_at=entry.occurred_at,
            actor=entry.actor,
            action=entry.action,
            target_type=entry.target_type,
            target_id=entry.target_id,
            before=json.loads(entry.before) if entry.before is not None else None,
            after=json.loads(entry.after) if entry.after is not None else None,
            request_id=entry.request_id,
        )


class AuditQuery(BaseModel):
    """Filters of the audit log; every one optional. ``after_id`` pages forward."""

    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_id: int | None = None
    limit: int = 100

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """A time without a zone is read as UTC, the ledger's zone."""
        return as_utc(value)

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, String, Text
from sqlmodel import Field, SQLModel

from billing.models.types import BigIntPK, UTCDateTime, utcnow


class AuditEntry(SQLModel, table=True):
    """One admin write: who did what to which record, and the record before and after.

    Insert-only (database triggers refuse updates and deletes). ``before`` and ``after`` are
    JSON snapshots of the record's public fields; secrets never appear in them.
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_occurred_at", "occurred_at"),
        Index("ix_audit_entries_target", "target_type", "target_id"),
        Index("ix_audit_entries_actor", "actor"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    occurred_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    # The JWT subject for the admin API, "cli:<os user>" for the CLI.
    actor: str = Field(sa_column=Column(String(200), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    target_type: str = Field(sa_column=Column(String(32), nullable=False))
    target_id: str = Field(sa_column=Column(String(128), nullable=False))
    before: str | None = Field(default=None, sa_column=Column(Text))
    after: str | None = Field(default=None, sa_column=Column(Text))
    request_id: str | None = Field(default=None, sa_column=Column(String(64)))

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Column, String
from sqlmodel import Field, SQLModel

from billing.models.types import UTCDateTime, utcnow


class AdminUser(SQLModel, table=True):
    """A person who signs in to the web console with a password. Only an argon2 hash of the
    password is kept. A disabled user cannot sign in, and every session of theirs stops working
    at once (sessions re-read the user on each request)."""

    __tablename__ = "admin_users"
    __table_args__ = (CheckConstraint("role IN ('owner', 'operator', 'finance')", name="role"),)

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(sa_column=Column(String(128), nullable=False, unique=True))
    # owner: every admin scope; operator: day-to-day writes; finance: read-only.
    role: str = Field(sa_column=Column(String(16), nullable=False))
    password_hash: str = Field(sa_column=Column(String(255), nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    password_changed_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    disabled_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))

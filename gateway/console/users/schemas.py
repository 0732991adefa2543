"""Admin users as the CLI and the audit log show them (never the password hash)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from billing.models import AdminUser


class AdminUserPublic(BaseModel):
    id: int
    username: str
    role: str
    created_at: datetime
    password_changed_at: datetime
    disabled_at: datetime | None

    @classmethod
    def of(cls, user: AdminUser) -> AdminUserPublic:
        assert user.id is not None
        return cls(
            id=user.id,
            username=user.username,
            role=user.role,
            created_at=user.created_at,
            password_changed_at=user.password_changed_at,
            disabled_at=user.disabled_at,
        )

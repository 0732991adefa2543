"""``asrgw up``'s first console user: made and reused in development, never in production."""

from __future__ import annotations

from pathlib import Path

from billing.db import Database
from gateway.cli.up import ensure_console_admin
from gateway.console.users.service import check_password, list_users
from tests.gateway.console.client import add_user


def test_development_makes_one_owner_and_reuses_it(database: Database, tmp_path: Path) -> None:
    saved = tmp_path / "console-admin-password"
    first = ensure_console_admin(database, saved, production=False)
    again = ensure_console_admin(database, saved, production=False)
    password = saved.read_text().strip()
    assert first == again == f"user admin, password {password}"
    with database.transaction() as session:
        assert [(user.username, user.role) for user in list_users(session)] == [("admin", "owner")]
        assert check_password(session, "admin", password) is not None


def test_production_prints_no_password_and_creates_nobody(
    database: Database, tmp_path: Path
) -> None:
    saved = tmp_path / "console-admin-password"
    empty = ensure_console_admin(database, saved, production=True)
    add_user(database, "olivia", "owner")
    existing = ensure_console_admin(database, saved, production=True)
    assert "admin user create NAME --role owner" in empty
    assert "password" not in existing
    assert not saved.exists()
    with database.transaction() as session:
        assert [user.username for user in list_users(session)] == ["olivia"]

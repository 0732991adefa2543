"""Admin users of the console: created, re-passworded and disabled from the CLI, audited like
every other admin write."""

from __future__ import annotations

from sqlmodel import Session

from billing.audit import service as audit
from billing.audit.schemas import Actor
from billing.errors import AlreadyExists, InvalidValue, NotFound
from billing.models import AdminUser
from billing.models.types import utcnow
from gateway.console.passwords import hash_password, verify_password
from gateway.console.roles import Role
from gateway.console.sessions import repository as sessions
from gateway.console.users import repository
from gateway.console.users.schemas import AdminUserPublic


def _hashed(password: str) -> str:
    try:
        return hash_password(password)
    except ValueError as error:
        raise InvalidValue(str(error)) from None


def require_user(session: Session, username: str) -> AdminUser:
    user = repository.get_user(session, username)
    if user is None:
        raise NotFound(f"no admin user named {username!r}")
    return user


def create_user(
    session: Session, username: str, role: str, password: str, *, actor: Actor
) -> AdminUser:
    username = username.strip()
    if not username:
        raise InvalidValue("an admin user needs a name")
    if role not in set(Role):
        raise InvalidValue(f"role must be one of {', '.join(Role)}")
    if repository.get_user(session, username) is not None:
        raise AlreadyExists(f"admin user {username!r} exists already")
    user = repository.add_user(
        session, AdminUser(username=username, role=role, password_hash=_hashed(password))
    )
    audit.record(
        session, actor, "admin_user.create", "admin_user", username, after=AdminUserPublic.of(user)
    )
    return user


def set_password(session: Session, username: str, password: str, *, actor: Actor) -> int:
    """A new password; every open session of the user ends. Returns how many did."""
    user = require_user(session, username)
    before = AdminUserPublic.of(user)
    user.password_hash = _hashed(password)
    user.password_changed_at = utcnow()
    repository.add_user(session, user)
    ended = sessions.revoke_user_sessions(session, user, utcnow())
    audit.record(
        session,
        actor,
        "admin_user.set_password",
        "admin_user",
        username,
        before=before,
        after=AdminUserPublic.of(user),
    )
    return ended


def set_disabled(session: Session, username: str, disabled: bool, *, actor: Actor) -> AdminUser:
    """Disable (every session ends; signing in is refused) or enable a user again."""
    user = require_user(session, username)
    if (user.disabled_at is not None) == disabled:
        return user
    before = AdminUserPublic.of(user)
    now = utcnow()
    user.disabled_at = now if disabled else None
    repository.add_user(session, user)
    if disabled:
        sessions.revoke_user_sessions(session, user, now)
    action = "admin_user.disable" if disabled else "admin_user.enable"
    audit.record(
        session,
        actor,
        action,
        "admin_user",
        username,
        before=before,
        after=AdminUserPublic.of(user),
    )
    return user


def check_password(session: Session, username: str, password: str) -> AdminUser | None:
    """The active user these credentials belong to, else None (same work either way)."""
    return user_if_password_matches(find_user(session, username), password)


def find_user(session: Session, username: str) -> AdminUser | None:
    return repository.get_user(session, username)


def user_if_password_matches(user: AdminUser | None, password: str) -> AdminUser | None:
    """``user`` when ``password`` is theirs and they are active, else None; a missing user is
    checked against a decoy, so the time taken does not tell which names exist."""
    matches = verify_password(user.password_hash if user is not None else None, password)
    if user is None or not matches or user.disabled_at is not None:
        return None
    return user


def list_users(session: Session) -> list[AdminUserPublic]:
    return [AdminUserPublic.of(user) for user in repository.list_users(session)]

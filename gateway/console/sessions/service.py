"""Console sessions: opaque random ids in an HttpOnly cookie, only their hash on the server.

A session lives until the earliest of: its absolute end (``expires_at``, set at sign-in), the
idle limit after its last request, its revocation (sign-out, ``asrgw admin session revoke``, a
new password or a disabled user). Every request reads the row, so a revocation takes effect on
every replica with the next request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Literal

from sqlmodel import Session

from billing.audit import service as audit
from billing.audit.schemas import Actor
from billing.errors import NotFound
from billing.models import AdminUser, ConsoleSession, Tenant
from billing.models.types import utcnow
from gateway.admin.auth import Scope, parse_scopes
from gateway.console.roles import scopes_of
from gateway.console.sessions import repository
from gateway.console.sessions.schemas import ConsoleCaller, ConsoleSessionPublic, OwnSession

# last_seen_at is written at most this often: enough for an idle limit counted in minutes.
TOUCH_EVERY = timedelta(seconds=10)
USER_AGENT_LENGTH = 300


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def start_session(
    session: Session,
    *,
    kind: Literal["admin", "portal"],
    subject: str,
    max_age: timedelta,
    user: AdminUser | None = None,
    tenant: Tenant | None = None,
    scopes: frozenset[Scope] = frozenset(),
    client_ip: str | None = None,
    now: datetime | None = None,
) -> tuple[str, ConsoleSession]:
    """A new session; returns the cookie value (shown to no one else) and the row."""
    now = now or utcnow()
    token = new_token()
    record = repository.add_session(
        session,
        ConsoleSession(
            token_hash=hash_token(token),
            kind=kind,
            subject=subject,
            admin_user_id=user.id if user is not None else None,
            tenant_id=tenant.id if tenant is not None else None,
            scopes=" ".join(sorted(scope.value for scope in scopes)),
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + max_age,
            client_ip=client_ip,
        ),
    )
    return token, record


def read_session(
    session: Session,
    token: str,
    *,
    idle: timedelta,
    now: datetime | None = None,
    user_agent: str | None = None,
) -> ConsoleCaller | None:
    """The caller of an open session, else None (unknown, revoked, idle, past its end, or its
    user disabled). The first request after sign-in records the browser's ``user_agent``."""
    now = now or utcnow()
    found = repository.find_by_token_hash(session, hash_token(token))
    if found is None:
        return None
    record, user, tenant = found
    if record.revoked_at is not None or record.expires_at <= now:
        return None
    if record.last_seen_at + idle <= now:
        return None
    if record.kind == "admin":
        if record.admin_user_id is not None and (user is None or user.disabled_at is not None):
            return None
        # A password user's scopes follow their role as it is now; an SSO session keeps the
        # scopes its token granted.
        scopes = (
            scopes_of(user.role) if user is not None else parse_scopes({"scope": record.scopes})
        )
    else:
        if tenant is None:
            return None
        scopes = frozenset()
    assert record.id is not None
    if now - record.last_seen_at >= TOUCH_EVERY:
        repository.touch(session, record.id, now)
    if record.user_agent is None and user_agent:
        repository.set_user_agent(session, record.id, user_agent[:USER_AGENT_LENGTH])
    return ConsoleCaller(
        session_id=record.id,
        kind="admin" if record.kind == "admin" else "portal",
        subject=record.subject,
        scopes=scopes,
        tenant_id=tenant.id if tenant is not None else None,
        tenant_name=tenant.name if tenant is not None else None,
        csrf_token=record.csrf_token,
        expires_at=min(record.expires_at, record.last_seen_at + idle),
        authenticated_at=record.reauthenticated_at or record.created_at,
        admin_user_id=record.admin_user_id,
    )


def end_session(session: Session, session_id: int) -> None:
    """Sign-out: the session ends on every replica."""
    repository.revoke(session, session_id, utcnow())


def revoke_session(session: Session, session_id: int, *, actor: Actor) -> None:
    """``asrgw admin session revoke --session ID``."""
    if repository.revoke(session, session_id, utcnow()) == 0:
        raise NotFound(f"no open console session with id {session_id}")
    audit.record(session, actor, "console_session.revoke", "console_session", session_id)


def revoke_subject(session: Session, kind: str, subject: str, *, actor: Actor) -> int:
    """End every open session of an admin (by username or SSO subject) or of a tenant's portal."""
    ended = repository.revoke_subject_sessions(session, kind, subject, utcnow())
    if ended:
        audit.record(
            session, actor, "console_session.revoke", "console_session", f"{kind}:{subject}"
        )
    return ended


def list_open_sessions(session: Session) -> list[ConsoleSessionPublic]:
    return [
        ConsoleSessionPublic.model_validate(record, from_attributes=True)
        for record in repository.list_open_sessions(session, utcnow())
    ]


def _own_record(session: Session, caller: ConsoleCaller) -> ConsoleSession:
    record = repository.get_session(session, caller.session_id)
    if record is None:
        raise NotFound("this console session no longer exists")
    return record


def list_own_sessions(
    session: Session, caller: ConsoleCaller, *, idle: timedelta
) -> list[OwnSession]:
    """The caller's open sessions (the same user, SSO subject or portal tenant), most recently
    used first, the current one marked."""
    now = utcnow()
    records = repository.list_owned_sessions(
        session, _own_record(session, caller), now, seen_since=now - idle
    )
    return [
        OwnSession.model_validate(
            {
                **record.model_dump(include=set(OwnSession.model_fields) - {"current"}),
                "current": record.id == caller.session_id,
            }
        )
        for record in records
    ]


def end_own_session(session: Session, caller: ConsoleCaller, session_id: int) -> None:
    """End one of the caller's sessions; another person's (or an unknown) id is not found."""
    record = _own_record(session, caller)
    if repository.revoke_owned(session, record, utcnow(), only=session_id, keep=None) == 0:
        raise NotFound(f"no open session of yours with id {session_id}")
    audit.record(session, caller.actor(), "console_session.revoke", "console_session", session_id)


def end_other_sessions(session: Session, caller: ConsoleCaller) -> int:
    """End every session of the caller but this one; returns how many ended."""
    record = _own_record(session, caller)
    ended = repository.revoke_owned(session, record, utcnow(), only=None, keep=caller.session_id)
    if ended:
        audit.record(
            session,
            caller.actor(),
            "console_session.revoke_others",
            "console_session",
            caller.session_id,
        )
    return ended


def record_reauthentication(session: Session, session_id: int, now: datetime) -> None:
    repository.set_reauthenticated(session, session_id, now)

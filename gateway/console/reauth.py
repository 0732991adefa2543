"""Step-up authentication: the console's most sensitive writes (creating or rotating API keys,
adding credit, creating plans) ask the caller to prove who they are again unless they did
within ``GATEWAY_CONSOLE_REAUTH_SECONDS`` (sign-in counts). The time is kept on the session
(``reauthenticated_at``), so it holds on every replica.

How a caller proves it is how they signed in:
- a password user types their password, checked as a sign-in is
  (``PasswordAttempts.verify_password_attempt``): a wrong one counts as a failed sign-in from
  that address and on that account, and a throttled address or account is refused before it is
  checked;
- an SSO user presents a fresh token of the same subject, verified as at sign-in;
- a customer portal session cannot: its link opened it once. Its grace runs from the moment the
  link was opened; after that the page asks for a new link from the provider.

Nothing here checks a password itself: ``verify_password_again`` hands it to the sign-in's own
``PasswordAttempts``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import anyio
from fastapi import Depends, Request

from billing.db import Database
from billing.models.types import utcnow
from gateway.admin.auth import TokenVerifier
from gateway.console.deps import PasswordAttemptsDep, ThrottleDep, client_ip, require_caller
from gateway.console.errors import ReauthFailed, ReauthRequired
from gateway.console.password_attempts import PasswordAttempts
from gateway.console.sessions.schemas import ConsoleCaller
from gateway.console.sessions.service import record_reauthentication
from gateway.console.throttle import SignInThrottle
from gateway.deps import DatabaseDep, SettingsDep
from gateway.errors import AdminAuthError

PASSWORD_FIELD = "reauth_password"
TOKEN_FIELD = "reauth_token"
NOT_RESENT = frozenset({"csrf_token", PASSWORD_FIELD, TOKEN_FIELD})


def verify_password_again(
    database: Database,
    attempts: PasswordAttempts,
    request: Request,
    caller: ConsoleCaller,
    password: str,
) -> bool:
    """Check the signed-in user's password for a step-up as a sign-in is checked (throttled per
    address and account, in a bounded hash slot); records the step-up on the session when it
    matches."""
    user = attempts.verify_password_attempt(database, caller.subject, password, client_ip(request))
    if user is None or user.id != caller.admin_user_id:
        return False
    with database.transaction() as session:
        record_reauthentication(session, caller.session_id, utcnow())
    return True


def verify_token_again(
    database: Database,
    throttle: SignInThrottle,
    request: Request,
    caller: ConsoleCaller,
    token: str,
) -> bool:
    """An SSO user's step-up: a valid token of the same subject, under the address's sign-in
    window (a refused token keeps its place there, as at sign-in)."""
    reservation = throttle.reserve(client_ip(request))
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        matches = verifier.verify(token.strip()).subject == caller.subject
    except AdminAuthError:
        matches = False
    except BaseException:
        # Only a refused token counts, not a provider that could not be asked.
        reservation.give_back()
        raise
    if not matches:
        return False
    reservation.give_back()
    with database.transaction() as session:
        record_reauthentication(session, caller.session_id, utcnow())
    return True


async def require_recent_authentication(
    request: Request,
    caller: Annotated[ConsoleCaller, Depends(require_caller)],
    database: DatabaseDep,
    settings: SettingsDep,
    throttle: ThrottleDep,
    attempts: PasswordAttemptsDep,
) -> ConsoleCaller:
    """The caller, once they proved who they are within the grace; else the re-authentication
    page (401 ``reauthentication_required``) carrying the write's fields to send again."""
    grace = timedelta(seconds=settings.console_reauth_seconds)
    if caller.authenticated_at is not None and utcnow() - caller.authenticated_at < grace:
        return caller
    form = await request.form()
    fields = [
        (name, value)
        for name, value in form.multi_items()
        if isinstance(value, str) and name not in NOT_RESENT
    ]
    if caller.kind == "portal":
        raise ReauthRequired(
            "Creating keys needs a freshly opened portal: ask your provider for a new portal "
            "link and open it.",
            fields=fields,
            means="link",
        )
    sso = caller.admin_user_id is None
    field, means = (TOKEN_FIELD, "sso") if sso else (PASSWORD_FIELD, "password")
    presented = form.get(field)
    what = "a fresh sign-in token" if sso else "your password"
    if not isinstance(presented, str) or not presented:
        raise ReauthRequired(f"Confirm it is you: enter {what} again.", fields=fields, means=means)
    if sso:
        verified = await anyio.to_thread.run_sync(
            verify_token_again, database, throttle, request, caller, presented
        )
    else:
        verified = await anyio.to_thread.run_sync(
            verify_password_again, database, attempts, request, caller, presented
        )
    if not verified:
        raise ReauthFailed(f"That was not {what}; nothing was changed.", fields=fields, means=means)
    return caller


RecentlyAuthenticated = Annotated[ConsoleCaller, Depends(require_recent_authentication)]

"""Step-up authentication: the console's most sensitive writes (creating or rotating API keys,
adding credit, creating plans) ask the caller to prove who they are again unless they did
within ``GATEWAY_CONSOLE_REAUTH_SECONDS`` (sign-in counts). The time is kept on the session
(``reauthenticated_at``), so it holds on every replica.

How a caller proves it is how they signed in:
- a password user types their password; a wrong one counts as a failed sign-in from that
  address (the sign-in throttle), and a throttled address is refused before it is checked;
- an SSO user presents a fresh token of the same subject, verified as at sign-in;
- a customer portal session cannot: its link opened it once. Its grace runs from the moment the
  link was opened; after that the page asks for a new link from the provider.

``verify_password_again`` is the one place a password is checked here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import anyio
from fastapi import Depends, Request

from billing.db import Database
from billing.models.types import utcnow
from gateway.admin.auth import TokenVerifier
from gateway.console.deps import ThrottleDep, require_caller
from gateway.console.errors import ReauthFailed, ReauthRequired
from gateway.console.sessions.schemas import ConsoleCaller
from gateway.console.sessions.service import record_reauthentication
from gateway.console.throttle import SignInThrottle
from gateway.console.users.service import check_password
from gateway.deps import DatabaseDep, SettingsDep
from gateway.errors import AdminAuthError

PASSWORD_FIELD = "reauth_password"
TOKEN_FIELD = "reauth_token"
NOT_RESENT = frozenset({"csrf_token", PASSWORD_FIELD, TOKEN_FIELD})


def verify_password_again(
    database: Database,
    throttle: SignInThrottle,
    request: Request,
    caller: ConsoleCaller,
    password: str,
) -> bool:
    """Check the signed-in user's password for a step-up, from the request's address, under
    the sign-in throttle; records the step-up on the session when it matches."""
    throttle.refuse_if_throttled(request)
    with database.transaction() as session:
        user = check_password(session, caller.subject, password)
        matches = user is not None and user.id == caller.admin_user_id
        if matches:
            record_reauthentication(session, caller.session_id, utcnow())
    if not matches:
        throttle.count_failure(request)
    return matches


def verify_token_again(
    database: Database,
    throttle: SignInThrottle,
    request: Request,
    caller: ConsoleCaller,
    token: str,
) -> bool:
    """An SSO user's step-up: a valid token of the same subject."""
    throttle.refuse_if_throttled(request)
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        matches = verifier.verify(token.strip()).subject == caller.subject
    except AdminAuthError:
        matches = False
    if not matches:
        throttle.count_failure(request)
        return False
    with database.transaction() as session:
        record_reauthentication(session, caller.session_id, utcnow())
    return True


async def require_recent_authentication(
    request: Request,
    caller: Annotated[ConsoleCaller, Depends(require_caller)],
    database: DatabaseDep,
    settings: SettingsDep,
    throttle: ThrottleDep,
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
    verify = verify_token_again if sso else verify_password_again
    if not await anyio.to_thread.run_sync(verify, database, throttle, request, caller, presented):
        raise ReauthFailed(f"That was not {what}; nothing was changed.", fields=fields, means=means)
    return caller


RecentlyAuthenticated = Annotated[ConsoleCaller, Depends(require_recent_authentication)]

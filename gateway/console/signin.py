"""Signing in and out of the console: a password, an SSO token, or a customer's portal link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Header, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from gateway.admin.auth import AdminClaims, TokenVerifier, bearer_token
from gateway.admin.deps import in_transaction
from gateway.console.deps import (
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    PasswordAttemptsDep,
    PresessionCsrf,
    SignedInWrite,
    ThrottleDep,
    check_csrf,
    clear_cookie,
    client_ip,
    cookie_name,
    optional_caller,
    presession_token,
    set_cookie,
)
from gateway.console.errors import PortalLinkInvalid, SignInFailed
from gateway.console.portal_links.service import redeem_portal_link
from gateway.console.sessions.schemas import ConsoleCaller
from gateway.console.sessions.service import end_session, start_session
from gateway.console.views import render
from gateway.deps import DatabaseDep, SettingsDep
from gateway.errors import AdminAuthError, NotFoundError

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)

PRESESSION_MAX_AGE = 3600


def safe_next(target: str | None, default: str = "/console") -> str:
    """Only a path inside the console: never another site (``//evil``, ``https://…``)."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return default


def _sign_in_page(
    request: Request,
    settings: SettingsDep,
    *,
    error: str | None = None,
    status_code: int = 200,
    next_path: str = "/console",
    username: str = "",
) -> Response:
    token = presession_token(request, settings)
    response = render(
        request,
        "sign_in.html",
        {
            "presession_token": token,
            "error": error,
            "next": next_path,
            "username": username,
            "sso": bool(settings.admin_jwks_url),
            "portal": next_path.startswith("/console/portal"),
        },
        status_code=status_code,
    )
    set_cookie(response, PRESESSION_COOKIE, token, settings, PRESESSION_MAX_AGE)
    return response


def _open_session(target: str, token: str, settings: SettingsDep, max_age: int) -> Response:
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, SESSION_COOKIE, token, settings, max_age)
    return response


@router.get("/sign-in")
def sign_in_page(
    request: Request,
    settings: SettingsDep,
    caller: Annotated[ConsoleCaller | None, Depends(optional_caller)],
    next: str | None = None,
) -> Response:
    """The sign-in form (and the SSO token form when a JWKS is configured)."""
    if caller is not None and caller.kind == "admin":
        return RedirectResponse(safe_next(next), status_code=303)
    return _sign_in_page(request, settings, next_path=safe_next(next))


@router.post("/sign-in")
def sign_in(
    request: Request,
    _csrf: PresessionCsrf,
    database: DatabaseDep,
    settings: SettingsDep,
    attempts: PasswordAttemptsDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/console",
) -> Response:
    """Check a password; a session cookie and a redirect on success, the form again on failure."""
    max_age = settings.console_session_max_seconds
    user = attempts.verify_password_attempt(database, username, password, client_ip(request))
    if user is None:
        failed = SignInFailed("Wrong username or password, or the user is disabled.")
        return _sign_in_page(
            request,
            settings,
            error=failed.message,
            status_code=failed.status_code,
            next_path=safe_next(next),
            username=username,
        )

    signed_in = user

    def start(session: Session) -> str:
        token, _record = start_session(
            session,
            kind="admin",
            subject=signed_in.username,
            user=signed_in,
            max_age=timedelta(seconds=max_age),
            client_ip=client_ip(request),
        )
        return token

    return _open_session(safe_next(next), in_transaction(database, start), settings, max_age)


@router.post("/sign-in/sso")
def sign_in_with_sso(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    throttle: ThrottleDep,
    token: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Open a session with an admin JWT from the SSO provider (GATEWAY_ADMIN_JWKS_URL), verified
    exactly as the admin API verifies it; the session keeps the token's scopes and ends no
    later than the token. The token comes in the form (from the sign-in page, CSRF-checked) or
    as ``Authorization: Bearer`` (from an SSO proxy; browsers never add that header on their
    own, so it needs no CSRF token)."""
    if not settings.admin_jwks_url:
        raise NotFoundError("Single sign-on is not configured on this gateway.")
    if authorization:
        presented = bearer_token(authorization)
    else:
        check_csrf(request.cookies.get(cookie_name(PRESESSION_COOKIE, settings)), csrf_token)
        presented = token.strip()
    reservation = throttle.reserve(client_ip(request))
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        claims: AdminClaims = verifier.verify(presented)
    except AdminAuthError as error:
        return _sign_in_page(
            request, settings, error=error.message, status_code=SignInFailed.status_code
        )
    except BaseException:
        # Only a refused token counts, not a provider that could not be asked.
        reservation.give_back()
        raise
    reservation.give_back()
    remaining = int((claims.expires_at - datetime.now(UTC)).total_seconds())
    max_age = max(1, min(settings.console_session_max_seconds, remaining))

    def start(session: Session) -> str:
        opened, _record = start_session(
            session,
            kind="admin",
            subject=claims.subject,
            scopes=claims.scopes,
            max_age=timedelta(seconds=max_age),
            client_ip=client_ip(request),
        )
        return opened

    return _open_session("/console", in_transaction(database, start), settings, max_age)


@router.post("/sign-out")
def sign_out(caller: SignedInWrite, database: DatabaseDep, settings: SettingsDep) -> Response:
    """End this session everywhere and drop its cookie."""
    in_transaction(database, lambda session: end_session(session, caller.session_id))
    target = "/console/sign-in?notice=signed-out"
    if caller.kind == "portal":
        target = "/console/sign-in?notice=signed-out&next=/console/portal"
    response = RedirectResponse(target, status_code=303)
    clear_cookie(response, SESSION_COOKIE, settings)
    return response


@router.get("/portal/open")
def portal_open_page(request: Request, settings: SettingsDep) -> Response:
    """The page a portal link shows: a button that opens the portal (a link previewer that
    fetches the URL does not use it up). The link's token is in its fragment, which no request
    carries: the page's script moves it into the form, or the customer pastes it."""
    form_token = presession_token(request, settings)
    response = render(request, "portal/open.html", {"presession_token": form_token})
    set_cookie(response, PRESESSION_COOKIE, form_token, settings, PRESESSION_MAX_AGE)
    return response


@router.get("/portal/open/{_token}")
def portal_open_old_link(request: Request, _token: str) -> Response:
    """A link of the old form, its token in the path: refused unread and never echoed (a POST
    there, from a page of the old form, gets 405)."""
    return render(request, "portal/open.html", {"old_link": True}, status_code=410)


@router.post("/portal/open")
def portal_open(
    request: Request,
    _csrf: PresessionCsrf,
    database: DatabaseDep,
    settings: SettingsDep,
    throttle: ThrottleDep,
    token: Annotated[str, Form()] = "",
) -> Response:
    """Redeem a single-use portal link: a session scoped to its tenant alone."""
    reservation = throttle.reserve(client_ip(request))
    max_age = settings.console_session_max_seconds
    # Pasted links may come whole: the token is what follows the "#".
    token = token.rpartition("#")[2].strip()

    def redeem(session: Session) -> str | None:
        tenant = redeem_portal_link(session, token) if token else None
        if tenant is None:
            return None
        opened, _record = start_session(
            session,
            kind="portal",
            subject=tenant.name,
            tenant=tenant,
            max_age=timedelta(seconds=max_age),
            client_ip=client_ip(request),
        )
        return opened

    try:
        opened = in_transaction(database, redeem)
    except BaseException:
        reservation.give_back()
        raise
    if opened is None:
        raise PortalLinkInvalid(
            "This portal link is unknown, was used already or has expired; ask for a new one."
        )
    reservation.give_back()
    return _open_session("/console/portal", opened, settings, max_age)

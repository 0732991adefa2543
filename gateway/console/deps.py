"""Console request dependencies: the session behind the cookie, the CSRF check, the scopes.

Every state-changing console request carries a CSRF token: a signed-in session's synchronizer
token (the hidden ``csrf_token`` field of each form, or the ``X-CSRF-Token`` header of a
script's request), or, on the sign-in forms before any session exists, the value of a
double-submit cookie. A request without it, or with another, gets 403 ``csrf_token_invalid``.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any

import anyio
from fastapi import Depends, Form, Header, Request, Response
from starlette.requests import HTTPConnection

from billing.db import Database
from gateway.admin.scopes import READ, WRITE, Data, Scope, missing_scopes
from gateway.config import GatewaySettings
from gateway.console.errors import CsrfRejected, SignInRequired
from gateway.console.password_attempts import PasswordAttempts
from gateway.console.sessions.schemas import ConsoleCaller
from gateway.console.sessions.service import read_session
from gateway.console.throttle import SignInThrottle
from gateway.deps import DatabaseDep, SettingsDep
from gateway.errors import PermissionDenied

SESSION_COOKIE = "asrgw_console_session"
PRESESSION_COOKIE = "asrgw_console_csrf"


def client_ip(request: Request) -> str | None:
    """The client's address: the connection's peer, or what a trusted proxy says it is
    (``GATEWAY_FORWARDED_ALLOW_IPS``); the sign-in throttle counts attempts under it."""
    return request.client.host if request.client else None


def cookie_name(base: str, settings: GatewaySettings) -> str:
    # The __Host- prefix makes browsers refuse the cookie unless it is Secure, host-only and
    # for path /, so no sibling subdomain can plant one.
    return f"__Host-{base}" if settings.console_cookie_secure else base


def set_cookie(
    response: Response, base: str, value: str, settings: GatewaySettings, max_age: int | None
) -> None:
    response.set_cookie(
        cookie_name(base, settings),
        value,
        max_age=max_age,
        path="/",
        secure=settings.console_cookie_secure,
        httponly=True,
        samesite="lax",
    )


def clear_cookie(response: Response, base: str, settings: GatewaySettings) -> None:
    response.delete_cookie(
        cookie_name(base, settings),
        path="/",
        secure=settings.console_cookie_secure,
        httponly=True,
        samesite="lax",
    )


def _read(
    database: Database, token: str, idle_seconds: int, user_agent: str | None
) -> ConsoleCaller | None:
    with database.transaction() as session:
        return read_session(
            session, token, idle=timedelta(seconds=idle_seconds), user_agent=user_agent
        )


async def session_caller(
    connection: HTTPConnection, database: Database, settings: GatewaySettings
) -> ConsoleCaller | None:
    """The one lookup of the session behind the cookie."""
    token = connection.cookies.get(cookie_name(SESSION_COOKIE, settings))
    if not token:
        return None
    return await anyio.to_thread.run_sync(
        _read,
        database,
        token,
        settings.console_session_idle_seconds,
        connection.headers.get("user-agent"),
    )


async def optional_caller(
    request: Request, database: DatabaseDep, settings: SettingsDep
) -> ConsoleCaller | None:
    caller = await session_caller(request, database, settings)
    request.state.console_caller = caller
    return caller


SIGN_IN_FIRST = "Sign in to the console first; your session may have ended."


async def admit_console_session(connection: HTTPConnection) -> None:
    """A console upload's session, looked up before its body is read
    (``gateway.credentials_first``); the route's dependency then checks its kind and CSRF."""
    state = connection.app.state
    if await session_caller(connection, state.database, state.settings) is None:
        raise SignInRequired(SIGN_IN_FIRST)


# The console's routes that take an upload.
CONSOLE_UPLOADS = {"/console/portal/playground": admit_console_session}


async def require_caller(
    caller: Annotated[ConsoleCaller | None, Depends(optional_caller)],
) -> ConsoleCaller:
    if caller is None:
        raise SignInRequired(SIGN_IN_FIRST)
    return caller


async def presented_csrf_token(
    csrf_token: Annotated[str | None, Form()] = None,
    x_csrf_token: Annotated[str | None, Header()] = None,
) -> str:
    return csrf_token or x_csrf_token or ""


def check_csrf(expected: str | None, presented: str) -> None:
    # Compared as bytes: compare_digest raises TypeError on a str that is not ASCII, and a
    # form field is whatever the client typed.
    if (
        not expected
        or not presented
        or not hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogatepass"))
    ):
        raise CsrfRejected(
            "This request lacks the console's CSRF token (or carries a stale one); reload the "
            "page and try again."
        )


def require_admin(
    *needed: Scope, write: bool = False
) -> Callable[..., Coroutine[Any, Any, ConsoleCaller]]:
    """An admin session holding every scope in ``needed``; writes also need the CSRF token."""

    async def admit(
        caller: Annotated[ConsoleCaller, Depends(require_caller)],
        presented: Annotated[str, Depends(presented_csrf_token)],
    ) -> ConsoleCaller:
        if write:
            check_csrf(caller.csrf_token, presented)
        if caller.kind != "admin":
            raise PermissionDenied("This page belongs to the admin console.")
        missing = missing_scopes(caller.scopes, needed)
        if missing:
            raise PermissionDenied(f"Your console role lacks the scope {', '.join(missing)}.")
        return caller

    async def admit_read(
        caller: Annotated[ConsoleCaller, Depends(require_caller)],
    ) -> ConsoleCaller:
        return await admit(caller, "")

    return admit if write else admit_read


def _portal_only(caller: ConsoleCaller) -> ConsoleCaller:
    if caller.kind != "portal" or caller.tenant_id is None:
        raise PermissionDenied("This page belongs to a customer portal; open it with a link.")
    return caller


async def require_portal(
    caller: Annotated[ConsoleCaller, Depends(require_caller)],
) -> ConsoleCaller:
    return _portal_only(caller)


async def require_portal_write(
    caller: Annotated[ConsoleCaller, Depends(require_caller)],
    presented: Annotated[str, Depends(presented_csrf_token)],
) -> ConsoleCaller:
    check_csrf(caller.csrf_token, presented)
    return _portal_only(caller)


async def require_any_write(
    caller: Annotated[ConsoleCaller, Depends(require_caller)],
    presented: Annotated[str, Depends(presented_csrf_token)],
) -> ConsoleCaller:
    check_csrf(caller.csrf_token, presented)
    return caller


def presession_token(request: Request, settings: GatewaySettings) -> str:
    """The double-submit value of the sign-in forms: the cookie's, or a new one."""
    return request.cookies.get(cookie_name(PRESESSION_COOKIE, settings)) or secrets.token_urlsafe(
        32
    )


async def require_presession_csrf(
    request: Request,
    settings: SettingsDep,
    presented: Annotated[str, Depends(presented_csrf_token)],
) -> None:
    check_csrf(request.cookies.get(cookie_name(PRESESSION_COOKIE, settings)), presented)


async def get_throttle(request: Request) -> SignInThrottle:
    throttle: SignInThrottle = request.app.state.console_throttle
    return throttle


async def get_password_attempts(request: Request) -> PasswordAttempts:
    attempts: PasswordAttempts = request.app.state.console_password_attempts
    return attempts


def admin_page(data: Data) -> Callable[..., Coroutine[Any, Any, ConsoleCaller]]:
    """A page showing ``data``: the scopes the admin API reads it with."""
    return require_admin(*READ[data])


def admin_form(data: Data) -> Callable[..., Coroutine[Any, Any, ConsoleCaller]]:
    """A form changing ``data``: the scopes the admin API writes it with, and the CSRF token."""
    return require_admin(*WRITE[data], write=True)


TenantsPage = Annotated[ConsoleCaller, Depends(admin_page(Data.tenants))]
TenantsWrite = Annotated[ConsoleCaller, Depends(admin_form(Data.tenants))]
PlansPage = Annotated[ConsoleCaller, Depends(admin_page(Data.plans))]
PlansWrite = Annotated[ConsoleCaller, Depends(admin_form(Data.plans))]
KeysWrite = Annotated[ConsoleCaller, Depends(admin_form(Data.keys))]
CreditWrite = Annotated[ConsoleCaller, Depends(admin_form(Data.credit))]
PortalLinksWrite = Annotated[ConsoleCaller, Depends(admin_form(Data.portal_links))]
UsagePage = Annotated[ConsoleCaller, Depends(admin_page(Data.usage))]
BillingPage = Annotated[ConsoleCaller, Depends(admin_page(Data.invoices))]
BillingWrite = Annotated[ConsoleCaller, Depends(admin_form(Data.invoices))]
NodesPage = Annotated[ConsoleCaller, Depends(admin_page(Data.nodes))]
NodesWrite = Annotated[ConsoleCaller, Depends(admin_form(Data.nodes))]
AuditPage = Annotated[ConsoleCaller, Depends(admin_page(Data.audit))]
PortalPage = Annotated[ConsoleCaller, Depends(require_portal)]
PortalWrite = Annotated[ConsoleCaller, Depends(require_portal_write)]
SignedIn = Annotated[ConsoleCaller, Depends(require_caller)]
SignedInWrite = Annotated[ConsoleCaller, Depends(require_any_write)]
PresessionCsrf = Annotated[None, Depends(require_presession_csrf)]
ThrottleDep = Annotated[SignInThrottle, Depends(get_throttle)]
PasswordAttemptsDep = Annotated[PasswordAttempts, Depends(get_password_attempts)]

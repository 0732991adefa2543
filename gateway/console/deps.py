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

from billing.db import Database
from gateway.admin.auth import Scope
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


def _read(database: Database, token: str, idle_seconds: int) -> ConsoleCaller | None:
    with database.transaction() as session:
        return read_session(session, token, idle=timedelta(seconds=idle_seconds))


async def optional_caller(
    request: Request, database: DatabaseDep, settings: SettingsDep
) -> ConsoleCaller | None:
    token = request.cookies.get(cookie_name(SESSION_COOKIE, settings))
    if not token:
        return None
    caller = await anyio.to_thread.run_sync(
        _read, database, token, settings.console_session_idle_seconds
    )
    request.state.console_caller = caller
    return caller


async def require_caller(
    caller: Annotated[ConsoleCaller | None, Depends(optional_caller)],
) -> ConsoleCaller:
    if caller is None:
        raise SignInRequired("Sign in to the console first; your session may have ended.")
    return caller


async def presented_csrf_token(
    csrf_token: Annotated[str | None, Form()] = None,
    x_csrf_token: Annotated[str | None, Header()] = None,
) -> str:
    return csrf_token or x_csrf_token or ""


def check_csrf(expected: str | None, presented: str) -> None:
    if not expected or not presented or not hmac.compare_digest(expected, presented):
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
        missing = sorted(scope.value for scope in needed if scope not in caller.scopes)
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


TenantsPage = Annotated[ConsoleCaller, Depends(require_admin(Scope.tenants_read))]
TenantsWrite = Annotated[ConsoleCaller, Depends(require_admin(Scope.tenants_write, write=True))]
PlansPage = Annotated[ConsoleCaller, Depends(require_admin(Scope.plans_read))]
PlansWrite = Annotated[ConsoleCaller, Depends(require_admin(Scope.plans_write, write=True))]
KeysWrite = Annotated[ConsoleCaller, Depends(require_admin(Scope.keys_write, write=True))]
BillingPage = Annotated[ConsoleCaller, Depends(require_admin(Scope.billing_read))]
BillingWrite = Annotated[ConsoleCaller, Depends(require_admin(Scope.billing_write, write=True))]
NodesPage = Annotated[ConsoleCaller, Depends(require_admin(Scope.nodes_read))]
NodesWrite = Annotated[ConsoleCaller, Depends(require_admin(Scope.nodes_write, write=True))]
AuditPage = Annotated[ConsoleCaller, Depends(require_admin(Scope.audit_read))]
PortalPage = Annotated[ConsoleCaller, Depends(require_portal)]
PortalWrite = Annotated[ConsoleCaller, Depends(require_portal_write)]
SignedInWrite = Annotated[ConsoleCaller, Depends(require_any_write)]
PresessionCsrf = Annotated[None, Depends(require_presession_csrf)]
ThrottleDep = Annotated[SignInThrottle, Depends(get_throttle)]
PasswordAttemptsDep = Annotated[PasswordAttempts, Depends(get_password_attempts)]

"""Every console route, under ``/console``, and its static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from gateway.config import GatewaySettings
from gateway.console import account, signin
from gateway.console.admin import invoices, operations, tenants
from gateway.console.errors import ReauthRequired, SignInRequired
from gateway.console.password_attempts import PasswordAttempts
from gateway.console.portal import pages, playground
from gateway.console.throttle import SignInThrottle
from gateway.console.views import render
from gateway.errors import GatewayError

STATIC = Path(__file__).parent / "static"

ROUTERS = tuple(
    module.router for module in (signin, account, tenants, invoices, operations, pages, playground)
)
router = APIRouter()
for module_router in ROUTERS:
    router.include_router(module_router)


def install_console(app: FastAPI, settings: GatewaySettings) -> None:
    throttle = SignInThrottle(settings)
    app.state.console_throttle = throttle
    app.state.console_password_attempts = PasswordAttempts(settings, throttle)
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")


def wants_page(request: Request) -> bool:
    """A browser navigating or posting a form (not a script asking for JSON)."""
    return request.url.path.startswith("/console") and "text/html" in request.headers.get(
        "accept", ""
    )


def console_error_page(request: Request, error: GatewayError) -> Response | None:
    """The console's answer to an error: a redirect to sign-in, or an error page with the same
    status and code the JSON envelope would carry. None outside the console's pages."""
    if not wants_page(request):
        return None
    if isinstance(error, SignInRequired):
        target = request.url.path
        if request.method != "GET":
            target = "/console/portal" if target.startswith("/console/portal") else "/console"
        return RedirectResponse(f"/console/sign-in?next={target}", status_code=303)
    if isinstance(error, ReauthRequired):
        # The same write again, with the proof asked for: its fields ride along hidden.
        return render(
            request,
            "reauth.html",
            {"error": error, "action": request.url.path},
            status_code=error.status_code,
        )
    return render(
        request,
        "error.html",
        {"error": error},
        status_code=error.status_code,
        headers=error.headers(),
    )

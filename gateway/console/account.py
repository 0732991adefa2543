"""Console: the signed-in user's own sessions, listed and ended.

A user sees every open session of theirs (the same password user, the same SSO subject, or for
the customer portal the same tenant) with when it began, when it was last used, its address and
browser, and ends any one of them or all but the current one. An ended session's cookie opens
nothing on any replica from its next request on.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.deps import in_transaction
from gateway.console.deps import SignedIn, SignedInWrite
from gateway.console.sessions.service import (
    end_other_sessions,
    end_own_session,
    list_own_sessions,
)
from gateway.console.views import render
from gateway.deps import DatabaseDep, SettingsDep

router = APIRouter(prefix="/console/account", tags=["console"], include_in_schema=False)
SESSIONS_PAGE = "/console/account/sessions"


@router.get("/sessions")
def sessions_page(
    request: Request, database: DatabaseDep, settings: SettingsDep, caller: SignedIn
) -> Response:
    """Your open sessions: created, last seen, address, browser; this one marked."""
    idle = timedelta(seconds=settings.console_session_idle_seconds)
    sessions = in_transaction(
        database, lambda session: list_own_sessions(session, caller, idle=idle)
    )
    return render(request, "account/sessions.html", {"sessions": sessions})


@router.post("/sessions/{session_id}/end")
def end_session_form(session_id: int, database: DatabaseDep, caller: SignedInWrite) -> Response:
    """End one of your sessions (this one too: you are then signed out)."""
    in_transaction(database, lambda session: end_own_session(session, caller, session_id))
    return RedirectResponse(f"{SESSIONS_PAGE}?notice=session-ended", status_code=303)


@router.post("/sessions/end-others")
def end_others_form(database: DatabaseDep, caller: SignedInWrite) -> Response:
    """End every session of yours but this one."""
    in_transaction(database, lambda session: end_other_sessions(session, caller))
    return RedirectResponse(f"{SESSIONS_PAGE}?notice=sessions-ended", status_code=303)

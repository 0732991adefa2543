"""Credentials before bodies: an upload route's API key is looked up before a byte of its body
is read.

FastAPI parses a route's form (and Starlette spools a large part to disk) before it resolves
any dependency, so a request with no key or a wrong one would cost the gateway its whole upload
before the 401. This pure ASGI middleware, ahead of the application, looks the presented key up
with the routes' own lookup (``gateway.deps.caller_for_key``: the key cache, else the
database) and answers ``401 invalid_api_key`` at once, leaving the body unread. A key it lets
through is in the key cache, so the route's dependency, still the authority for scopes, models
and limits, finds it there.

Only the routes that take an upload are guarded (``UPLOAD_PATHS``): every other route reads no
body worth protecting, and the admin API and the console have credentials of their own.
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.asgi import send_error
from gateway.deps import caller_for_key, presented_api_key
from gateway.errors import GatewayError, LedgerUnavailable

# Every customer route with a request body (tests/gateway/test_key_first.py holds this list to
# the OpenAPI document, so a new upload route cannot be left out).
UPLOAD_PATHS = frozenset(
    {
        "/v1/audio/transcriptions",
        "/v1/jobs",
        "/asr",
        "/detect-language",
        "/api/transcribe",
        "/v1/realtime/client_secrets",
    }
)
# They are all POST routes: another method still gets its 405 from the router.
UPLOAD_METHOD = "POST"


class KeyFirstMiddleware:
    def __init__(self, app: ASGIApp, paths: frozenset[str] = UPLOAD_PATHS) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == UPLOAD_METHOD
            and scope["path"].rstrip("/") in self.paths
        ):
            refusal = await self.refusal(HTTPConnection(scope))
            if refusal is not None:
                # The body stays unread, so the connection cannot carry another request.
                await send_error(send, refusal, [(b"connection", b"close")])
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def refusal(connection: HTTPConnection) -> GatewayError | None:
        """Why the presented key is refused; None when it is a valid key."""
        try:
            database = connection.app.state.database
            await caller_for_key(connection, database, presented_api_key(connection.headers))
        except OperationalError:
            return LedgerUnavailable(
                "The billing ledger is busy or unreachable; nothing was billed. Retry shortly.",
                retry_after_seconds=1,
            )
        except GatewayError as error:
            return error
        return None

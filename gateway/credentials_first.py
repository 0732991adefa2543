"""Credentials before bodies: an upload route's caller is looked up before a byte of its body
is read.

FastAPI parses a route's form (and Starlette spools a large part to disk) before it resolves
any dependency, so a request with no credentials or wrong ones would cost the gateway its whole
upload before the 401. This pure ASGI middleware, ahead of the application, runs the route's
own lookup of its caller first and answers the refusal at once, in the usual envelope with
``Connection: close``, leaving the body unread:

- the customer API's upload routes (``API_UPLOAD_PATHS``): the API key, with the lookup the
  routes' dependency uses (``gateway.deps.caller_for_key``: the key cache, else the database),
  so a key let through is found in the key cache by the route, which stays the authority for
  scopes, models and limits;
- the console's uploads (``gateway.console.deps.CONSOLE_UPLOADS``): the session cookie.

Other routes read no body worth protecting, and the admin API's bodies are small JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.exc import OperationalError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.asgi import send_error
from gateway.deps import caller_for_key, presented_api_key
from gateway.errors import GatewayError, LedgerUnavailable

# Raises the GatewayError that refuses the request; returns when its caller may go on.
Admission = Callable[[HTTPConnection], Awaitable[None]]

# Every customer route with a request body (tests/gateway/test_credentials_first.py holds this
# list to the OpenAPI document, so a new upload route cannot be left out).
API_UPLOAD_PATHS = frozenset(
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


async def admit_api_key(connection: HTTPConnection) -> None:
    database = connection.app.state.database
    await caller_for_key(connection, database, presented_api_key(connection.headers))


class CredentialsFirstMiddleware:
    def __init__(self, app: ASGIApp, admissions: Mapping[str, Admission]) -> None:
        self.app = app
        self.admissions = dict(admissions)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == UPLOAD_METHOD:
            admission = self.admissions.get(scope["path"].rstrip("/"))
            if admission is not None:
                refusal = await self.refusal(admission, HTTPConnection(scope))
                if refusal is not None:
                    # The body stays unread, so the connection cannot carry another request.
                    await send_error(send, refusal, [(b"connection", b"close")])
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def refusal(admission: Admission, connection: HTTPConnection) -> GatewayError | None:
        """Why the request is refused; None when its caller may go on."""
        try:
            await admission(connection)
        except OperationalError:
            return LedgerUnavailable(
                "The billing ledger is busy or unreachable; nothing was billed. Retry shortly.",
                retry_after_seconds=1,
            )
        except GatewayError as error:
            return error
        return None

"""Security headers on every response of the gateway, whoever made it.

Pure ASGI and outermost, so it sees every response start: routes, error handlers, the 401/404/413
of other middleware, the 500 of ``RequestContextMiddleware``, ``/metrics``, static files and the
HTTP answer that refuses a WebSocket upgrade. It touches only the start message: a streamed body
and an accepted WebSocket pass through unchanged.

- every response: ``X-Content-Type-Options: nosniff`` (a browser never reads a JSON error or a
  CSV as HTML or script);
- console responses (``/console``): ``Referrer-Policy``, ``X-Frame-Options`` and CSP
  ``frame-ancestors`` (pages set a fuller policy of their own), and ``Cache-Control: no-store``
  on everything but static files, redirects and JSON errors included;
- with Secure console cookies (HTTPS deployments): ``Strict-Transport-Security``.

A header the response set itself is left as it is.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_PREFIX = "/console"
CONSOLE_STATIC_PREFIX = "/console/static/"
START_MESSAGES = ("http.response.start", "websocket.http.response.start")
HSTS_SECONDS = 63_072_000  # two years, as browsers' preload lists ask

Headers = tuple[tuple[bytes, bytes], ...]

EVERY_RESPONSE: Headers = ((b"x-content-type-options", b"nosniff"),)
CONSOLE_RESPONSE: Headers = (
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)
CONSOLE_DYNAMIC_RESPONSE: Headers = ((b"cache-control", b"no-store"),)


def headers_for(path: str, *, strict_transport: bool) -> Headers:
    """The headers a response to ``path`` carries unless it set them itself."""
    headers = EVERY_RESPONSE
    if strict_transport:
        headers += ((b"strict-transport-security", f"max-age={HSTS_SECONDS}".encode()),)
    if path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"):
        headers += CONSOLE_RESPONSE
        if not path.startswith(CONSOLE_STATIC_PREFIX):
            headers += CONSOLE_DYNAMIC_RESPONSE
    return headers


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, strict_transport: bool = False) -> None:
        self.app = app
        self.strict_transport = strict_transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        wanted = headers_for(scope.get("path", ""), strict_transport=self.strict_transport)

        async def send_with_headers(message: Message) -> None:
            if message["type"] in START_MESSAGES:
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _value in headers}
                headers.extend(header for header in wanted if header[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

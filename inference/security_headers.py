"""``X-Content-Type-Options: nosniff`` on every response of the node.

Pure ASGI and outermost, so it stamps what routes, error handlers and the drain middleware send
alike, and passes streamed bodies (NDJSON) and WebSockets through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOSNIFF = (b"x-content-type-options", b"nosniff")
START_MESSAGES = ("http.response.start", "websocket.http.response.start")


class NoSniffMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_nosniff(message: Message) -> None:
            if message["type"] in START_MESSAGES:
                headers = list(message.get("headers", []))
                if all(name.lower() != NOSNIFF[0] for name, _value in headers):
                    headers.append(NOSNIFF)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_nosniff)

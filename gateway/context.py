"""Request context: every response carries ``x-request-id``, even a crash's 500."""

from __future__ import annotations

import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.asgi import send_error
from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class RequestContextMiddleware:
    """Pure ASGI, outermost: assigns the request id, stamps it on the response headers, and turns
    an unhandled exception into the error envelope (Starlette's own 500 would skip our headers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception:
            logger.exception("unhandled error in request %s", request_id)
            if response_started:
                raise
            await _send_internal_error(send, request_id)


async def _send_internal_error(send: Send, request_id: str) -> None:
    error = GatewayError(f"The server had an error processing request {request_id}.")
    await send_error(send, error, [(REQUEST_ID_HEADER.encode(), request_id.encode())])

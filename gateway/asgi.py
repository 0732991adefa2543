"""Sending an error envelope from raw ASGI middleware, where there is no Response to return."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Send

from gateway.errors import GatewayError, error_response


async def send_error(
    send: Send, error: GatewayError, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """``error_response(error)`` sent message by message, with ``extra_headers`` added."""
    response = error_response(error)
    headers = [*response.raw_headers, *extra_headers]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})

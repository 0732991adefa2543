"""Sending an error envelope from raw ASGI middleware, where there is no Response to return."""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import Send

from gateway.errors import GatewayError


async def send_error(
    send: Send, error: GatewayError, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    payload = json.dumps(error.envelope()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in error.headers().items()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})

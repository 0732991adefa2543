"""Refusing an oversized upload from its ``Content-Length``, before reading any of the body."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.asgi import send_error
from gateway.errors import FileTooLarge

# Room for the multipart boundaries and the small form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class UploadLimitMiddleware:
    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_upload_bytes + MULTIPART_OVERHEAD_BYTES
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in {"POST", "PUT"}:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._refuse(send)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, send: Send) -> None:
        error = FileTooLarge(
            f"The uploaded file exceeds the limit of {self.max_upload_bytes} bytes.", param="file"
        )
        # The body is left unread, so the connection cannot be reused.
        await send_error(send, error, [(b"connection", b"close")])

"""Upload limits, enforced while the body streams in rather than after it has been read.

A request whose ``Content-Length`` already says it is too large is refused before any of its body
is read. Every other request — chunked uploads that state no length, and any whose stated length
is wrong — has its body counted chunk by chunk as the application receives it: the moment the
count passes the cap, the client gets ``413 file_too_large`` and the application reading the body
is stopped. Nothing is buffered here; each chunk is passed on as it arrives. The rest of the body
is never read, so the refusal closes the connection.

The cap is on the whole request body, which is more than the file: a multipart upload carries
boundaries, part headers and small form fields (``model``, ``language``, ``prompt``, …), so
``MULTIPART_OVERHEAD_BYTES`` is allowed on top of ``GATEWAY_MAX_UPLOAD_BYTES``. A JSON body
carries its audio as base64, four bytes for every three, and is allowed that expansion. The
endpoints then check the file's own size exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.asgi import send_error
from gateway.errors import FileTooLarge

# Room for the multipart boundaries, part headers and the small form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
LIMITED_METHODS = frozenset({"POST", "PUT", "PATCH"})


def base64_length(size: int) -> int:
    return (size + 2) // 3 * 4


class UploadRefused(HTTPException):
    """Raised into the application reading a body past the cap, after the 413 has been sent:
    FastAPI lets an ``HTTPException`` from the body reader through unchanged (other errors
    would become a 400), and whatever response the application makes of it is dropped."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="Request body too large")


def body_cap(max_upload_bytes: int, headers: dict[bytes, bytes]) -> int:
    """The most body bytes an upload of ``max_upload_bytes`` may take, framing included."""
    content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    if content_type == b"application/json":
        return base64_length(max_upload_bytes) + MULTIPART_OVERHEAD_BYTES
    return max_upload_bytes + MULTIPART_OVERHEAD_BYTES


class UploadLimitMiddleware:
    """``max_upload_bytes`` everywhere, except under the path prefixes of ``path_limits``
    (the longest matching prefix wins), e.g. a larger limit for asynchronous jobs."""

    def __init__(
        self, app: ASGIApp, max_upload_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.path_limits = sorted((path_limits or {}).items(), key=lambda item: -len(item[0]))

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.path_limits:
            if path.startswith(prefix):
                return limit
        return self.max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in LIMITED_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.limit_for(scope["path"])
        cap = body_cap(limit, headers)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await refuse(send, limit)
            return

        received = 0
        response_started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                raise UploadRefused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    refused = True
                    if not response_started:
                        await refuse(send, limit)
                    raise UploadRefused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # the client already has its answer
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except UploadRefused:
            if not refused:
                raise


async def refuse(send: Send, max_upload_bytes: int) -> None:
    error = FileTooLarge(
        f"The uploaded file exceeds the limit of {max_upload_bytes} bytes.", param="file"
    )
    # The rest of the body is left unread, so the connection cannot be reused.
    await send_error(send, error, [(b"connection", b"close")])

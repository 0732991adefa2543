"""OpenAI's rate-limit headers, on every response of a rate-limited route."""

from __future__ import annotations

import math

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.ratelimits.window import WindowState

# Where an admitted request's headers wait, in the request state, for its response.
STATE_KEY = "rate_limit_headers"


def openai_duration(seconds: float) -> str:
    """A duration as OpenAI writes it (Go's format): ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    milliseconds = max(0, math.ceil(seconds * 1000))
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    minutes, milliseconds = divmod(milliseconds, 60_000)
    hours, minutes = divmod(minutes, 60)
    whole, fraction = divmod(milliseconds, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


def rate_limit_headers(state: WindowState) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(state.limit),
        "x-ratelimit-remaining-requests": str(state.remaining),
        "x-ratelimit-reset-requests": openai_duration(state.reset_seconds),
    }


class RateLimitHeadersMiddleware:
    """Stamps an admitted request's ``x-ratelimit-*`` headers on its response, whatever the
    response is: a transcript, or an error raised after admission (400, 402, 503, …)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_rate_limits(message: Message) -> None:
            headers: dict[str, str] | None = scope.get("state", {}).get(STATE_KEY)
            if message["type"] == "http.response.start" and headers:
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (name.encode(), value.encode())
                    for name, value in headers.items()
                    if name.encode() not in present
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_rate_limits)

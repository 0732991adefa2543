"""One webhook attempt over HTTP, bounded in time and in memory.

``GATEWAY_WEBHOOK_TIMEOUT_SECONDS`` is the whole attempt — resolving the name, connecting,
sending and receiving — not a per-read timeout that a receiver dripping a byte at a time could
stretch forever. Only the status line decides the outcome: at most ``RESPONSE_BODY_BYTES`` of
the body are read (and dropped) so a well-behaved receiver is not cut off mid-answer, then the
connection is closed, so an endless body costs neither memory nor a failed delivery.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
import httpx

from gateway.config import GatewaySettings
from gateway.jobs.webhooks.targets import Resolver, TargetPolicy, UnsafeWebhookUrl, resolve

RESPONSE_BODY_BYTES = 4096


@dataclass(frozen=True)
class DeliveryOutcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def build_client(settings: GatewaySettings) -> httpx.AsyncClient:
    """The senders' client: no redirects, no proxy from the environment, only the configured
    one; its own timeouts are a backstop behind the attempt's deadline."""
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        proxy=settings.webhook_proxy_url or None,
        timeout=settings.webhook_timeout_seconds,
    )


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    settings: GatewaySettings,
    *,
    resolver: Resolver | None = None,
) -> DeliveryOutcome:
    """POST ``body`` to ``url`` once the target passes the check, within the deadline."""
    started = time.monotonic()
    deadline = settings.webhook_timeout_seconds
    status_code: int | None = None

    def outcome(error: str | None) -> DeliveryOutcome:
        return DeliveryOutcome(status_code, error, round((time.monotonic() - started) * 1000))

    with anyio.move_on_after(deadline) as scope:
        try:
            # A resolver that hangs is left behind rather than waited for.
            target = await anyio.to_thread.run_sync(
                lambda: resolve(url, TargetPolicy.from_settings(settings), resolver),
                abandon_on_cancel=True,
            )
        except UnsafeWebhookUrl as error:
            return outcome(error.message)
        pinned = target.address is not None
        extensions = {"sni_hostname": target.host} if pinned and url.startswith("https:") else {}
        request = client.build_request(
            "POST",
            target.pinned_url(),
            content=body,
            headers={**headers, "Host": target.host_header()},
            extensions=extensions,
        )
        try:
            response = await client.send(request, stream=True)
            try:
                status_code = response.status_code
                await _read_some(response)
            finally:
                await response.aclose()
        except httpx.HTTPError as error:
            if status_code is None:
                return outcome(_describe(error))
    if status_code is None and scope.cancelled_caught:
        return outcome(f"Timeout: no answer within {deadline:g} s")
    return outcome(None if 200 <= (status_code or 0) < 300 else f"HTTP {status_code}")


async def _read_some(response: httpx.Response) -> None:
    if response.is_stream_consumed:  # an answer built in memory (a mock transport)
        return
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= RESPONSE_BODY_BYTES:
            return


def _describe(error: httpx.HTTPError) -> str:
    detail = str(error)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__

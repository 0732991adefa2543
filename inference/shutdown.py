"""Graceful shutdown: what a node does between SIGTERM and its exit.

```
SIGTERM ─▶ draining   /health/ready answers 503 "draining", so gateways stop choosing this
           │          node; requests are still taken for INFERENCE_SHUTDOWN_DELAY_SECONDS
           ├─▶ refusing  new work gets 503 node_draining (Retry-After): a gateway moves it to
           │             another node; admitted requests (the batch being decoded and those
           │             queued behind it) go on
           └─▶ stopped   once nothing is in flight, or INFERENCE_SHUTDOWN_GRACE_SECONDS after
                         SIGTERM: what still runs is cancelled (its caller told 503
                         node_draining), and the server's own SIGTERM handling ends the process
```

A second SIGTERM skips the rest of the wait. The mechanics are the gateway's
(``gateway/shutdown.py``); the node may not import the gateway, so they live here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from types import FrameType

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.errors import InferenceError, NodeDraining

logger = logging.getLogger(__name__)

# Always answered, never counted: probes and scrapes must see the drain.
UNDRAINED_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
# How long cancelled requests get to end before the process goes anyway.
CANCELLED_REQUESTS_SECONDS = 5.0

SignalHandler = Callable[[int, FrameType | None], object] | int | None


class DrainState(StrEnum):
    serving = "serving"
    draining = "draining"
    refusing = "refusing"


class Drain:
    """The drain of one process: its state, the requests in flight, and the SIGTERM hook."""

    def __init__(self, delay_seconds: float, grace_seconds: float) -> None:
        self.delay_seconds = delay_seconds
        self.grace_seconds = grace_seconds
        self.state = DrainState.serving
        self.in_flight = 0
        self._scopes: set[anyio.CancelScope] = set()
        # Set through the loop from the signal handler (renewed for each run of the app).
        self._signalled = asyncio.Event()
        self._hurried = asyncio.Event()
        self._wake = asyncio.Event()
        self._previous_handler: SignalHandler = signal.SIG_DFL

    @property
    def draining(self) -> bool:
        return self.state is not DrainState.serving

    @contextmanager
    def signal_hook(self) -> Iterator[None]:
        """Take SIGTERM from whoever holds it (the server) while the block runs. Only the main
        thread may set signal handlers; elsewhere (an app in a test's thread) nothing is hooked."""
        loop = asyncio.get_running_loop()
        self._signalled = signalled = asyncio.Event()
        self._hurried, self._wake = asyncio.Event(), asyncio.Event()
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self._hurry if signalled.is_set() else signalled.set)

        self._previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, self._previous_handler)

    def _hurry(self) -> None:
        logger.warning("second SIGTERM: stopping without waiting any longer")
        self._hurried.set()
        self._wake.set()

    async def run(self) -> None:
        """Wait for SIGTERM, drain, then hand the signal on. Runs for the life of the process."""
        await self._signalled.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_seconds
        self.state = DrainState.draining
        logger.warning(
            "SIGTERM: draining (%d requests in flight; at most %g s)",
            self.in_flight,
            self.grace_seconds,
        )
        await self._wait(min(self.delay_seconds, self.grace_seconds), until_idle=False)
        self.state = DrainState.refusing
        await self._wait(deadline - loop.time(), until_idle=True)
        if self.in_flight:
            logger.warning("shutdown grace over: cancelling %d requests", self.in_flight)
            for scope in list(self._scopes):
                scope.cancel()
            await self._wait(CANCELLED_REQUESTS_SECONDS, until_idle=True, hurry=False)
        logger.warning("drained; stopping")
        self._hand_on()

    async def _wait(self, seconds: float, *, until_idle: bool, hurry: bool = True) -> None:
        """Up to ``seconds``; less once nothing is in flight (``until_idle``) or, with
        ``hurry``, after a second SIGTERM."""
        with anyio.move_on_after(max(0.0, seconds)):
            while not (hurry and self._hurried.is_set()):
                if until_idle and not self.in_flight:
                    return
                self._wake.clear()
                await self._wake.wait()

    def _hand_on(self) -> None:
        """Pass SIGTERM to the handler this hook replaced (the server's), or to the default."""
        previous = self._previous_handler
        if callable(previous):
            previous(signal.SIGTERM, None)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    @contextmanager
    def tracking(self) -> Iterator[anyio.CancelScope]:
        """Count one request in flight; its scope is cancelled when the grace is over."""
        scope = anyio.CancelScope()
        self.in_flight += 1
        self._scopes.add(scope)
        try:
            yield scope
        finally:
            self._scopes.discard(scope)
            self.in_flight -= 1
            if not self.in_flight:
                self._wake.set()


class DrainMiddleware:
    """Pure ASGI: refuses new work while refusing, counts the rest in flight, and answers 503
    node_draining for a request cancelled at the end of the grace before it responded."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNDRAINED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.drain.state is DrainState.refusing:
            await send_error(
                send, NodeDraining("This node is shutting down and takes no new work.")
            )
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with self.drain.tracking() as cancel_scope, cancel_scope:
            await self.app(scope, receive, watching_send)
        if cancel_scope.cancelled_caught and not started:
            await send_error(send, NodeDraining("This node shut down before the request finished."))


async def send_error(send: Send, error: InferenceError) -> None:
    """The node's error envelope, from middleware where there is no Response to return."""
    payload = json.dumps(
        {"error": {"message": error.message, "type": error.error_type, "code": error.code}}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
    ]
    if error.retry_after_seconds:
        headers.append((b"retry-after", str(error.retry_after_seconds).encode()))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})

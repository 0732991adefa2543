"""Graceful shutdown: what a gateway process does between SIGTERM and its exit.

```
SIGTERM ─▶ draining   /health/ready answers 503 "draining", so load balancers stop sending;
           │          job workers put their jobs back for another replica; requests are
           │          still served for GATEWAY_SHUTDOWN_DELAY_SECONDS (a balancer's reaction)
           ├─▶ refusing  new requests get 503 gateway_draining (Retry-After, Connection:
           │             close), refused before anything is read, reserved or billed
           └─▶ stopped   once nothing is in flight, or GATEWAY_SHUTDOWN_GRACE_SECONDS after
                         SIGTERM: what still runs is cancelled (its reservation released, the
                         client told 503 gateway_draining), and the server's own SIGTERM
                         handling ends the process
```

A second SIGTERM skips the rest of the wait. Health checks and ``/metrics`` are answered
throughout. The server (uvicorn) keeps its own handler; this one runs first and hands the signal
on once the drain is over, so any launcher that handles SIGTERM (``asrgw gateway``, ``--workers``,
``uvicorn``) drains the same way.
"""

from __future__ import annotations

import asyncio
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

from gateway.asgi import send_error
from gateway.errors import GatewayDraining

logger = logging.getLogger(__name__)

# Always answered, never counted: probes and scrapes must see the drain.
UNDRAINED_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
# How long cancelled requests get to release what they hold before the process goes anyway.
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
        self._on_drain: list[Callable[[], object]] = []
        # Set through the loop from the signal handler (renewed for each run of the app).
        self._signalled = asyncio.Event()
        self._hurried = asyncio.Event()
        self._wake = asyncio.Event()
        self._previous_handler: SignalHandler = signal.SIG_DFL

    @property
    def draining(self) -> bool:
        return self.state is not DrainState.serving

    def on_drain(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (on the event loop) when the drain begins."""
        self._on_drain.append(callback)

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
        for callback in self._on_drain:
            callback()
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
    """Pure ASGI: refuses new requests while refusing, counts the others in flight, and answers
    503 gateway_draining for one cancelled at the end of the grace before it responded."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in UNDRAINED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.drain.state is DrainState.refusing:
            if scope["type"] == "http":
                await send_error(send, refused(), [(b"connection", b"close")])
            else:
                await send({"type": "websocket.close", "code": 1012})  # service restart
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept"):
                started = True
            await send(message)

        with self.drain.tracking() as cancel_scope, cancel_scope:
            await self.app(scope, receive, watching_send)
        if cancel_scope.cancelled_caught and not started and scope["type"] == "http":
            await send_error(send, cut_short(), [(b"connection", b"close")])


def refused() -> GatewayDraining:
    return GatewayDraining(
        "This gateway is shutting down and takes no new requests; retry (another replica will "
        "answer). Nothing was billed.",
        retry_after_seconds=1,
    )


def cut_short() -> GatewayDraining:
    return GatewayDraining(
        "This gateway shut down before the request finished; retry it. A request cut short "
        "before its transcript came back is not billed.",
        retry_after_seconds=1,
    )

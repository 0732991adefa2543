"""HTTP to the nodes, behind one small interface.

The pool sends each request's body once, in one piece, and needs three outcomes told apart:
the request never reached the node (another node may take it), it failed after it was sent (the
node may still be working on it: never retried), or the node answered. ``AiohttpNodeClient``
is the one the gateway runs: aiohttp's C-accelerated HTTP/1.1 costs about a sixth of httpx's
CPU per call (bench/gateway.py, docs/benchmarks.md). ``HttpxNodeClient`` serves an
``httpx`` transport, which is how tests put a node stand-in in the network's place.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx


class NotSent(Exception):
    """The request never reached the node: connecting failed, or no connection was free in
    time. ``pool_timeout`` tells the latter apart."""

    def __init__(self, detail: str, *, pool_timeout: bool = False) -> None:
        super().__init__(detail)
        self.pool_timeout = pool_timeout


class FailedAfterSending(Exception):
    """The request was (or may have been) sent, and no complete answer came back."""


@dataclass(frozen=True, slots=True)
class NodeResponse:
    status_code: int
    headers: Mapping[str, str]  # names in lower case
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass(frozen=True, slots=True)
class NodeStream:
    """A node's answer read as it comes: its status and headers, then its body line by line
    (``lines`` raises ``FailedAfterSending`` when the connection breaks midway)."""

    status_code: int
    headers: Mapping[str, str]
    lines: AsyncIterator[bytes]

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    async def response(self) -> NodeResponse:
        """The rest of the body as a whole response (an error answer, say)."""
        body = b"".join([line async for line in self.lines])
        return NodeResponse(self.status_code, self.headers, body)


class NodeClient(Protocol):
    async def post(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        read_timeout: float,
        connect_timeout: float,
    ) -> NodeResponse: ...

    async def get(self, url: str, *, timeout: float) -> NodeResponse: ...

    def stream(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        read_timeout: float,
        connect_timeout: float,
    ) -> AbstractAsyncContextManager[NodeStream]: ...

    async def aclose(self) -> None: ...


def _describe(error: BaseException) -> str:
    detail = str(error)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


@contextmanager
def _aiohttp_outcomes() -> Iterator[None]:
    """aiohttp's errors as the three outcomes the pool tells apart."""
    try:
        yield
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
        # Refused, unreachable, or no connection in time: nothing was sent.
        raise NotSent(_describe(error)) from error
    except (TimeoutError, aiohttp.ClientError) as error:
        raise FailedAfterSending(_describe(error)) from error


@contextmanager
def _httpx_outcomes() -> Iterator[None]:
    """httpx's errors as the three outcomes the pool tells apart."""
    try:
        yield
    except httpx.PoolTimeout as error:
        raise NotSent(_describe(error), pool_timeout=True) from error
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        raise NotSent(_describe(error)) from error
    except httpx.TransportError as error:
        raise FailedAfterSending(_describe(error)) from error


class AiohttpNodeClient:
    """Keep-alive connections to every node, at most ``connections`` at once; one idle for
    more than ``idle_seconds`` is closed rather than reused."""

    def __init__(self, *, connections: int = 256, idle_seconds: float = 15.0) -> None:
        self._connector = aiohttp.TCPConnector(
            limit=connections, limit_per_host=0, keepalive_timeout=idle_seconds
        )
        self._session = aiohttp.ClientSession(
            connector=self._connector, auto_decompress=False, raise_for_status=False
        )

    async def post(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        read_timeout: float,
        connect_timeout: float,
    ) -> NodeResponse:
        # ``connect`` covers waiting for a free pooled connection and connecting; ``sock_read``
        # the node's silence while it works.
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        return await self._request("POST", url, content, headers, timeout)

    async def get(self, url: str, *, timeout: float) -> NodeResponse:
        return await self._request(
            "GET", url, None, {}, aiohttp.ClientTimeout(total=timeout, connect=timeout)
        )

    @asynccontextmanager
    async def stream(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        read_timeout: float,
        connect_timeout: float,
    ) -> AsyncIterator[NodeStream]:
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        with _aiohttp_outcomes():
            response = await self._session.post(
                url, data=content, headers=dict(headers), timeout=timeout
            )

        async def lines() -> AsyncIterator[bytes]:
            with _aiohttp_outcomes():
                async for line in response.content:
                    yield line

        try:
            yield NodeStream(
                response.status,
                {name.lower(): value for name, value in response.headers.items()},
                lines(),
            )
        finally:
            # Closed, not released: a stream left midway must not go back to the pool, and the
            # node sees its caller leave.
            response.close()

    async def _request(
        self,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,
    ) -> NodeResponse:
        with _aiohttp_outcomes():
            async with self._session.request(
                method, url, data=content, headers=dict(headers), timeout=timeout
            ) as response:
                body = await response.read()
                return NodeResponse(
                    response.status,
                    {name.lower(): value for name, value in response.headers.items()},
                    body,
                )

    async def aclose(self) -> None:
        await self._session.close()


class HttpxNodeClient:
    """The same interface over an ``httpx.AsyncClient`` (tests pass a stand-in transport)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(transport=transport)

    async def post(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        read_timeout: float,
        connect_timeout: float,
    ) -> NodeResponse:
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        request = self._client.build_request(
            "POST", url, content=content, headers=headers, timeout=timeout
        )
        return await self._send(request)

    async def get(self, url: str, *, timeout: float) -> NodeResponse:
        return await self._send(self._client.build_request("GET", url, timeout=timeout))

    @asynccontextmanager
    async def stream(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        read_timeout: float,
        connect_timeout: float,
    ) -> AsyncIterator[NodeStream]:
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        request = self._client.build_request(
            "POST", url, content=content, headers=headers, timeout=timeout
        )
        with _httpx_outcomes():
            response = await self._client.send(request, stream=True)

        async def lines() -> AsyncIterator[bytes]:
            with _httpx_outcomes():
                async for line in response.aiter_lines():
                    yield line.encode()

        try:
            yield NodeStream(response.status_code, dict(response.headers), lines())
        finally:
            await response.aclose()

    async def _send(self, request: httpx.Request) -> NodeResponse:
        with _httpx_outcomes():
            response = await self._client.send(request)
        return NodeResponse(response.status_code, dict(response.headers), response.content)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpxNodeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

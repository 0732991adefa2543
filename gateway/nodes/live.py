"""A live stream on a node's online model (``WebSocket /v1/transcribe/live``, see
``inference.protocol``): PCM in as it arrives, the model's text out as each chunk is decoded.

```
connect, parameters ──▶ unreachable, or refused as overloaded / not ready / draining
                    │         └──▶ NotOpened: the pool tries another node
                    ├──▶ refused otherwise (offline model, unknown model) ──▶ the node's error
                    └──▶ {"type": "ready"} ──▶ send(pcm) … end() ──▶ deltas "…", "…", done
                               └── error message / broken connection ──▶ UpstreamUnavailable
```
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from gateway.errors import GatewayError, UpstreamUnavailable
from gateway.nodes.errors import mapped_node_error
from inference.protocol import TRANSCRIBE_LIVE_PATH, ErrorCode, TranscribeParams

# A node that answers these is busy or going away: another node may take the stream.
RETRYABLE_CODES = frozenset(
    {ErrorCode.node_overloaded, ErrorCode.not_ready, ErrorCode.node_draining}
)
RETRY_AFTER_SECONDS = 1


class NotOpened(Exception):
    """The node did not open the stream and another may (unreachable, overloaded)."""


class NodeLiveStream:
    """One open live stream to a node."""

    def __init__(self, url: str, connection: ClientConnection) -> None:
        self.url = url
        self.connection = connection

    async def send(self, pcm: bytes) -> None:
        """16-bit mono PCM at 16 kHz; a broken connection shows in ``deltas``."""
        try:
            await self.connection.send(pcm)
        except ConnectionClosed:
            pass

    async def end(self) -> None:
        try:
            await self.connection.send(json.dumps({"type": "end"}))
        except ConnectionClosed:
            pass

    async def deltas(self) -> AsyncIterator[str]:
        """The model's text as it decodes, until the node says the stream is done."""
        try:
            async for frame in self.connection:
                message = json.loads(frame)
                if message.get("type") == "delta":
                    yield str(message["text"])
                elif message.get("type") == "done":
                    return
                elif message.get("type") == "error":
                    raise _failed(self.url, message)
        except ConnectionClosed as error:
            raise UpstreamUnavailable(
                f"The connection to inference node {self.url} broke during a live stream "
                f"({error}).",
                retry_after_seconds=RETRY_AFTER_SECONDS,
            ) from error
        except (ValueError, KeyError) as error:
            raise UpstreamUnavailable(
                f"Inference node {self.url} sent a malformed live message ({error}).",
                retry_after_seconds=RETRY_AFTER_SECONDS,
            ) from error
        raise UpstreamUnavailable(
            f"Inference node {self.url} closed a live stream before it was done.",
            retry_after_seconds=RETRY_AFTER_SECONDS,
        )

    async def close(self) -> None:
        await self.connection.close()


async def open_live_stream(
    url: str, params: TranscribeParams, headers: dict[str, str], *, connect_timeout: float
) -> NodeLiveStream:
    """The stream, once the node has taken its parameters; ``NotOpened`` when another node
    should be asked, the node's mapped ``GatewayError`` when the request itself is refused."""
    address = "ws" + url.removeprefix("http") + TRANSCRIBE_LIVE_PATH
    try:
        connection = await connect(
            address,
            additional_headers=headers,
            open_timeout=connect_timeout,
            max_size=2**20,
            ping_interval=None,  # the node answers every chunk; idle is the gateway's concern
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as error:
        raise NotOpened(f"{url}: {error}") from error
    try:
        await connection.send(params.model_dump_json())
        answer = json.loads(await connection.recv())
    except (ConnectionClosed, ValueError, TimeoutError) as error:
        await connection.close()
        raise NotOpened(f"{url}: the stream did not open ({error})") from error
    if answer.get("type") == "ready":
        return NodeLiveStream(url, connection)
    await connection.close()
    refusal = _failed(url, answer)
    if isinstance(refusal, UpstreamUnavailable):
        raise NotOpened(f"{url}: {refusal.message}")
    raise refusal


def _failed(url: str, message: dict[str, Any]) -> GatewayError:
    """A node's refusal or failure, mapped as its HTTP equivalent would be."""
    error = message.get("error")
    detail = error if isinstance(error, dict) else {}
    code, text = str(detail.get("code", "")), str(detail.get("message", ""))
    status = 503 if code in RETRYABLE_CODES else 500 if code == ErrorCode.internal_error else 400
    return mapped_node_error(url, status, code, text)

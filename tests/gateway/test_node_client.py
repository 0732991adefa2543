"""The gateway's HTTP client to the nodes, against a real uvicorn server on loopback: which
keep-alive connections it reuses, and the node's side of that agreement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner

from gateway.cli.main import cli
from gateway.config import GatewaySettings
from gateway.nodes.client import AiohttpNodeClient
from inference.config import InferenceSettings
from tests.fixtures.processes import free_port
from tests.gateway.test_node_pool import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def client_port(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers each request with the client's port: one port per connection."""
    if scope["type"] != "http":
        return
    body = str(scope["client"][1]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving() -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(
        client_port,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=InferenceSettings().keep_alive_seconds,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await task


async def test_an_idle_connection_is_reused_only_within_the_idle_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("aiohttp.connector.monotonic", clock)
    async with serving() as url:
        client = AiohttpNodeClient(idle_seconds=15)
        try:

            async def port() -> str:
                response = await client.get(url, timeout=10)
                assert response.status_code == 200
                return response.text

            first = await port()
            clock.advance(15)
            assert await port() == first  # idle exactly the window: reused
            clock.advance(15.5)
            third = await port()  # idle past it: closed, and a new connection opened
            assert third != first
            assert await port() == third
        finally:
            await client.aclose()


def test_nodes_keep_idle_connections_open_longer_than_gateways_reuse_them() -> None:
    assert InferenceSettings().keep_alive_seconds > GatewaySettings().node_idle_connection_seconds


@pytest.mark.parametrize(
    ("environment", "expected"), [({}, 75), ({"INFERENCE_KEEP_ALIVE_SECONDS": "120"}, 120)]
)
def test_asrgw_node_serves_with_its_keep_alive(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: int
) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    # The app is the settings it was made of, so that no model is built.
    monkeypatch.setattr("inference.app.create_app", lambda settings: settings)
    result = CliRunner().invoke(cli, ["node", "--port", "0"], env=environment)
    assert result.exit_code == 0, result.output
    assert served["timeout_keep_alive"] == expected
    assert served["app"].keep_alive_seconds == expected

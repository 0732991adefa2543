"""Two real nodes behind one gateway: one is killed mid-traffic and later restarted."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from billing.config import BillingSettings
from billing.db import Database
from gateway.app import create_app
from gateway.nodes import CircuitState, NodePool, NodeStatus
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.nodes import metric
from tests.fixtures.processes import free_port, running
from tests.gateway.conftest import gateway_settings

pytestmark = pytest.mark.e2e

# Fast health checks and a short cooldown, so the test sees the pool react within seconds. A
# killed node refuses connections, which marks it at once; the checks' timeout stays long, so
# a survivor slowed by a loaded machine is not taken for dead.
POOL_SETTINGS = {
    "node_health_interval_seconds": 0.2,
    "node_health_timeout_seconds": 5.0,
    "node_failure_threshold": 2,
    "node_circuit_open_seconds": 0.5,
}
NODE_ENVIRONMENT = {"INFERENCE_NODE_SECRET": NODE_SECRET, "INFERENCE_MODELS": "pocketsphinx-en"}


@dataclass
class Sent:
    started: float
    finished: float
    response: httpx.Response


def unique(audio: bytes, counter: itertools.count[int]) -> bytes:
    """The same speech with another last sample, so the result cache never answers for a node."""
    return audio[:-2] + (next(counter) % 30_000).to_bytes(2, "little")


def post(client: TestClient, key: str, audio: bytes) -> Sent:
    started = time.monotonic()
    response = client.post(
        "/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("speech.wav", audio, "audio/wav")},
        data={"model": "whisper-1"},
    )
    return Sent(started, time.monotonic(), response)


def eventually(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def node_status(client: TestClient, url: str) -> NodeStatus:
    """What the pool reports of one node, read on the app's own event loop."""
    assert client.portal is not None
    pool: NodePool = client.app.state.nodes  # type: ignore[attr-defined]
    (status,) = [status for status in client.portal.call(pool.snapshot) if status.url == url]
    return status


def served_audio_seconds(url: str) -> float:
    return metric(url, "asrnode_audio_seconds_total", model="pocketsphinx-en")


class TestNodeKilledMidTraffic:
    def test_survivor_serves_and_the_restarted_node_rejoins(
        self, node_url: str, database: Database, weather_wav: Path, tmp_path: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        audio = weather_wav.read_bytes()
        port = free_port()
        victim = f"http://127.0.0.1:{port}"
        node_command = ["node", "--port", str(port)]
        app = create_app(
            gateway_settings(f"{node_url},{victim}", **POOL_SETTINGS),
            BillingSettings(database_url=database.url),
        )
        sent: list[Sent] = []
        stop = threading.Event()
        counter = itertools.count()

        def keep_sending() -> None:
            while not stop.is_set():
                sent.append(post(client, key, unique(audio, counter)))

        with TestClient(app) as client:
            with (
                running(
                    node_command, NODE_ENVIRONMENT, f"{victim}/health/ready", tmp_path / "a.log"
                ) as process,
                ThreadPoolExecutor(max_workers=3) as senders,
            ):
                eventually(lambda: node_status(client, victim).healthy is True)
                streams = [senders.submit(keep_sending) for _ in range(3)]
                # Kill it while it has work in flight: those requests may fail, nothing else.
                eventually(lambda: served_audio_seconds(victim) > 0)
                eventually(lambda: node_status(client, victim).outstanding > 0)
                # A request in flight may be answered (503) between the kill and the wait.
                kill_sent_at = time.monotonic()
                process.kill()
                process.wait()  # dead, not dying: what is sent from here cannot reach it
                killed_at = time.monotonic()
                eventually(lambda: sum(one.started > killed_at for one in sent) >= 9)
                dead = node_status(client, victim)
                stop.set()
                for stream in streams:
                    stream.result()

            assert dead.healthy is False
            assert dead.last_error is not None
            after_kill = [one for one in sent if one.started > killed_at]
            assert [one.response.status_code for one in after_kill] == [200] * len(after_kill)
            for one in sent:
                if one.finished < kill_sent_at:
                    assert one.response.status_code == 200
                elif one.response.status_code != 200:
                    # In flight on the killed node: the node may have been working on it.
                    assert one.response.status_code == 503
                    assert one.response.json()["error"]["code"] == "upstream_unavailable"
                    assert "x-billing-cost-micros" not in one.response.headers

            with running(
                node_command, NODE_ENVIRONMENT, f"{victim}/health/ready", tmp_path / "b.log"
            ):
                eventually(lambda: node_status(client, victim).healthy is True)
                eventually(lambda: node_status(client, victim).circuit is not CircuitState.open)
                rejoined = [post(client, key, unique(audio, counter)) for _ in range(4)]
                assert [one.response.status_code for one in rejoined] == [200] * 4
                assert served_audio_seconds(victim) > 0
                sent.extend(rejoined)

        succeeded = [one.response for one in sent if one.response.status_code == 200]
        rows = usage_rows(database)
        assert len(rows) == len(succeeded)
        assert {row.request_id for row in rows} == {
            response.headers["x-request-id"] for response in succeeded
        }
        assert sum(row.cost_micros for row in rows) == sum(
            int(response.headers["x-billing-cost-micros"]) for response in succeeded
        )
        assert account(database, "acme").reserved_micros == 0

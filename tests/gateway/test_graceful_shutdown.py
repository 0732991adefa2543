"""SIGTERM to a real gateway process: readiness red first, new requests refused, what is in
flight finished (or cut short at the bound and released), jobs put back; a draining node's work
goes to another node.

A request is held in flight deterministically by stopping the node process (SIGSTOP) once the
gateway has dispatched to it, and let go with SIGCONT: no test waits on a timer to line up.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from billing.db import Database
from billing.migrate import upgrade_to_head
from billing.models import Job, Reservation
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.nodes import metric
from tests.fixtures.processes import ASRGW, ROOT, free_port, running, wait_until_ready
from tests.gateway.test_node_failover import eventually

pytestmark = pytest.mark.e2e

NODE_ENVIRONMENT = {"INFERENCE_NODE_SECRET": NODE_SECRET, "INFERENCE_MODELS": "pocketsphinx-en"}


@dataclass
class Node:
    url: str
    process: subprocess.Popen[bytes]

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The node process frozen (SIGSTOP) while the block runs: whatever reaches it waits."""
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    database: Database
    key: str

    def transcribe(self, audio: bytes) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {self.key}"},
            files={"file": ("speech.wav", audio, "audio/wav")},
            data={"model": "whisper-1"},
            timeout=120,
        )

    def outstanding_on(self, node: Node) -> float:
        return metric(self.url, "asrgw_node_outstanding_requests", node=node.url)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 30) -> int:
        return self.process.wait(timeout=timeout)


def node_process(log: Path, **environment: str) -> Iterator[Node]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {**NODE_ENVIRONMENT, **environment}
    with running(["node", "--port", str(port)], environment, f"{url}/health/ready", log) as p:
        yield Node(url, p)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from node_process(tmp_path_factory.mktemp("node") / "node.log")


@pytest.fixture(scope="module")
def second_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from node_process(tmp_path_factory.mktemp("node2") / "node.log")


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """``start_gateway(node_urls, **settings)``: an ``asrgw gateway`` process on a fresh SQLite
    ledger with one tenant and key; ``settings`` become GATEWAY_* variables."""
    processes: list[subprocess.Popen[bytes]] = []
    databases: list[Database] = []

    def start(nodes: str, **settings: object) -> Gateway:
        database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        upgrade_to_head(database_url)
        database = Database(database_url)
        databases.append(database)
        key = create_tenant_with_key(database, "acme")
        port = free_port()
        environment = {
            "BILLING_DATABASE_URL": database_url,
            "GATEWAY_NODES": nodes,
            "GATEWAY_NODE_SECRET": NODE_SECRET,
            "GATEWAY_CACHE_ENABLED": "false",
            "GATEWAY_JOB_STORAGE_DIR": str(tmp_path / "job-audio"),
            "GATEWAY_JOB_POLL_SECONDS": "0.05",
            **{f"GATEWAY_{name.upper()}": str(value) for name, value in settings.items()},
        }
        log = (tmp_path / "gateway.log").open("ab")
        process = subprocess.Popen(
            [*ASRGW, "gateway", "--port", str(port)],
            env={**os.environ, **environment},
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        log.close()
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/health/ready", process)
        return Gateway(url, process, database, key)

    try:
        yield start
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for database in databases:
            database.dispose()


@pytest.fixture(scope="module")
def audio(weather_wav: Path) -> bytes:
    return weather_wav.read_bytes()


def open_reservations(database: Database) -> list[Reservation]:
    with database.transaction() as session:
        return list(session.exec(select(Reservation).where(Reservation.state == "open")).all())


def in_background(call: Callable[[], Any]) -> Future[Any]:
    executor = ThreadPoolExecutor(max_workers=1)
    future = executor.submit(call)
    executor.shutdown(wait=False)
    return future


class TestSigterm:
    def test_the_request_in_flight_completes_and_is_billed_once_a_new_one_is_refused(
        self, node: Node, start_gateway: Callable[..., Gateway], audio: bytes
    ) -> None:
        gateway = start_gateway(node.url)
        with node.stopped():
            in_flight = in_background(lambda: gateway.transcribe(audio))
            eventually(lambda: gateway.outstanding_on(node) == 1)
            gateway.terminate()
            eventually(lambda: httpx.get(f"{gateway.url}/health/ready").status_code == 503)
            readiness = httpx.get(f"{gateway.url}/health/ready")
            assert readiness.json() == {"status": "draining", "in_flight": 1}
            assert httpx.get(f"{gateway.url}/health/live").status_code == 200

            refused = gateway.transcribe(audio)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "gateway_draining"
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["connection"] == "close"
            assert refused.headers["x-request-id"].startswith("req_")
            assert gateway.process.poll() is None, "the gateway waits for its request"

        answered = in_flight.result(timeout=120)
        assert answered.status_code == 200, answered.text
        assert "weather" in answered.json()["text"]
        assert gateway.wait_exit() in (0, -signal.SIGTERM)

        (row,) = usage_rows(gateway.database)
        assert row.request_id == answered.headers["x-request-id"]
        assert row.cost_micros == int(answered.headers["x-billing-cost-micros"])
        assert open_reservations(gateway.database) == []
        assert account(gateway.database, "acme").reserved_micros == 0

    def test_a_request_past_the_grace_is_cut_short_and_its_reservation_released(
        self, node: Node, start_gateway: Callable[..., Gateway], audio: bytes
    ) -> None:
        gateway = start_gateway(node.url, shutdown_grace_seconds=1)
        with node.stopped():
            in_flight = in_background(lambda: gateway.transcribe(audio))
            eventually(lambda: gateway.outstanding_on(node) == 1)
            assert len(open_reservations(gateway.database)) == 1
            gateway.terminate()
            cut_short = in_flight.result(timeout=60)
            assert gateway.wait_exit() in (0, -signal.SIGTERM)

        assert cut_short.status_code == 503
        assert cut_short.json()["error"]["code"] == "gateway_draining"
        assert "is not billed" in cut_short.json()["error"]["message"]
        assert usage_rows(gateway.database) == []
        assert open_reservations(gateway.database) == []
        assert account(gateway.database, "acme").reserved_micros == 0

    def test_the_delay_keeps_serving_while_readiness_is_red_and_a_second_sigterm_ends_it(
        self, node: Node, start_gateway: Callable[..., Gateway]
    ) -> None:
        gateway = start_gateway(node.url, shutdown_delay_seconds=600, shutdown_grace_seconds=900)
        gateway.terminate()
        eventually(lambda: httpx.get(f"{gateway.url}/health/ready").status_code == 503)

        served = httpx.get(
            f"{gateway.url}/v1/usage", headers={"Authorization": f"Bearer {gateway.key}"}
        )
        assert served.status_code == 200, served.text

        gateway.terminate()
        assert gateway.wait_exit(timeout=30) in (0, -signal.SIGTERM)

    def test_a_job_being_worked_goes_back_to_the_queue(
        self, node: Node, start_gateway: Callable[..., Gateway], audio: bytes
    ) -> None:
        gateway = start_gateway(node.url, job_workers=1)
        with node.stopped():
            submitted = httpx.post(
                f"{gateway.url}/v1/jobs",
                headers={"Authorization": f"Bearer {gateway.key}"},
                files={"file": ("speech.wav", audio, "audio/wav")},
                data={"model": "whisper-1"},
            )
            assert submitted.status_code in (200, 201, 202), submitted.text
            job_id = submitted.json()["id"]
            eventually(lambda: gateway.outstanding_on(node) == 1)
            gateway.terminate()
            assert gateway.wait_exit() in (0, -signal.SIGTERM)

        with gateway.database.transaction() as session:
            job = session.get(Job, job_id)
            assert job is not None
            assert (job.state, job.attempts, job.lease_owner) == ("queued", 0, None)
        assert usage_rows(gateway.database) == []


class TestDrainingNode:
    def test_a_draining_node_finishes_its_work_refuses_new_work_and_the_gateway_goes_elsewhere(
        self, node: Node, start_gateway: Callable[..., Gateway], audio: bytes, tmp_path: Path
    ) -> None:
        # A grace no loaded machine outlasts: the test ends the wait itself, with a second
        # SIGTERM, once it has seen what it needs.
        with contextmanager(node_process)(
            tmp_path / "draining-node.log", INFERENCE_SHUTDOWN_GRACE_SECONDS="600"
        ) as draining:
            # Health checks far apart: the gateway learns of the drain from the refusals alone.
            gateway = start_gateway(f"{draining.url},{node.url}", node_health_interval_seconds=600)
            with held_uploads(draining.url, 2) as (finished_later, never_finished):
                draining.process.send_signal(signal.SIGTERM)
                eventually(lambda: httpx.get(f"{draining.url}/health/ready").status_code == 503)
                refused = httpx.post(
                    f"{draining.url}/v1/transcribe",
                    headers={"Authorization": f"Bearer {NODE_SECRET}"},
                    files={"file": ("speech.wav", audio, "audio/wav")},
                )
                answers = [gateway.transcribe(audio) for _ in range(3)]

                finished = finished_later.finish()
                assert finished.status == 200
                assert b"weather" in finished.read()
                assert draining.process.poll() is None, "one request is still in flight"
                # A second SIGTERM ends the wait: what is still in flight is cut short.
                draining.process.send_signal(signal.SIGTERM)
                cut_short = never_finished.response()
                assert cut_short.status == 503
                assert json.loads(cut_short.read())["error"]["code"] == "node_draining"
            assert draining.process.wait(timeout=30) in (0, -signal.SIGTERM)

        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "node_draining"
        assert refused.headers["retry-after"] == "1"
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert all("weather" in answer.json()["text"] for answer in answers)
        refusals = metric(
            gateway.url, "asrgw_upstream_requests_total", node=draining.url, outcome="5xx"
        )
        assert refusals >= 1
        assert len(usage_rows(gateway.database)) == 3


class HeldUpload:
    """A transcription whose multipart body is sent in two halves: in between, the request is
    in flight on the node (its app has been called) but not yet admitted to a model."""

    def __init__(self, url: str, audio: bytes) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=60)
        boundary = "held-upload-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="speech.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()
        body = head + audio + f"\r\n--{boundary}--\r\n".encode()
        self.rest = body[len(body) // 2 :]
        self.connection.putrequest("POST", "/v1/transcribe")
        self.connection.putheader("Authorization", f"Bearer {NODE_SECRET}")
        self.connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        self.connection.putheader("Content-Length", str(len(body)))
        self.connection.endheaders(body[: len(body) // 2])

    def finish(self) -> http.client.HTTPResponse:
        """Send the rest of the body and read the answer."""
        self.connection.send(self.rest)
        return self.connection.getresponse()

    def response(self) -> http.client.HTTPResponse:
        """The answer given without the rest of the body."""
        return self.connection.getresponse()


@contextmanager
def held_uploads(url: str, count: int) -> Iterator[list[HeldUpload]]:
    """``count`` held transcriptions on the node at ``url``, all counted in flight (its
    /health/ready says so) before the block runs."""
    audio = (ROOT / "docs" / "samples" / "weather.wav").read_bytes()
    holds = [HeldUpload(url, audio) for _ in range(count)]
    try:
        eventually(lambda: httpx.get(f"{url}/health/ready").json().get("in_flight") == count)
        yield holds
    finally:
        for hold in holds:
            hold.connection.close()

"""Webhooks to a receiver on loopback: signed, retried with backoff, logged per job; unsafe
targets refused."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from billing.db import Database
from billing.migrate import upgrade_to_head
from gateway.jobs.webhooks import signing
from gateway.jobs.webhooks.targets import WebhookTarget
from tests.fixtures.factories import create_tenant_with_key
from tests.gateway.jobs.conftest import FakeNode, fake_node_gateway, submit

SECRET = "receiver-shared-secret-0123456789"


def verify_webhook(secret: str, body: bytes, headers: dict[str, str], window: int = 300) -> bool:
    """What a receiver runs (the example of docs/jobs.md): the HMAC of the raw body, then the
    signed timestamp against the clock."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, headers.get("x-signature", "")):
        return False
    timestamp = json.loads(body)["timestamp"]
    return (
        str(timestamp) == headers.get("x-webhook-timestamp")
        and abs(time.time() - timestamp) <= window
    )


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """An HTTP server on loopback answering ``statuses`` in turn, then 200."""

    statuses: list[int]
    url: str = ""
    received: list[Delivery] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(statuses=[500, 500])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = state.statuses.pop(0) if state.statuses else 200
            headers = {name.lower(): value for name, value in self.headers.items()}
            state.received.append(Delivery(headers, body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/asr"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def wait_for_webhook(client: Any, job_id: str, key: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(
            f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
        ).json()
        if job["webhook"]["status"] in {"delivered", "failed"}:
            return job
        time.sleep(0.1)
    raise AssertionError(f"the webhook of job {job_id} was not settled within {timeout} s")


class TestDelivery:
    def test_two_failures_then_one_successful_signed_delivery(
        self, database: Database, tmp_path: Path, weather_wav: Path, receiver: Receiver
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with fake_node_gateway(FakeNode(), database, tmp_path / "audio") as client:
            created = submit(
                client,
                key,
                weather_wav.read_bytes(),
                webhook_url=receiver.url,
                webhook_secret=SECRET,
            )
            assert created.status_code == 201, created.text
            assert created.json()["webhook_secret"] is None  # the client chose it
            job = wait_for_webhook(client, created.json()["id"], key)

        assert [delivery.status for delivery in receiver.received] == [500, 500, 200]
        successful = [d for d in receiver.received if 200 <= d.status < 300]
        assert len(successful) == 1
        for delivery in receiver.received:
            assert verify_webhook(SECRET, delivery.body, delivery.headers)
            event = json.loads(delivery.body)
            assert event["type"] == "job.completed"
            assert event["data"]["id"] == job["id"]
            assert event["data"]["status"] == "completed"
            assert delivery.headers["x-webhook-event"] == "job.completed"
        # Every attempt carries the same event id, for the receiver to drop duplicates.
        assert len({d.headers["x-webhook-id"] for d in receiver.received}) == 1

        assert job["webhook"]["status"] == "delivered"
        assert job["webhook"]["attempts"] == 3
        log = job["webhook"]["deliveries"]
        assert [entry["attempt"] for entry in log] == [1, 2, 3]
        assert [entry["status_code"] for entry in log] == [500, 500, 200]
        assert [entry["succeeded"] for entry in log] == [False, False, True]
        assert log[0]["error"] == "HTTP 500"

    def test_a_tampered_body_or_timestamp_fails_verification(
        self, database: Database, tmp_path: Path, weather_wav: Path, receiver: Receiver
    ) -> None:
        receiver.statuses.clear()
        key = create_tenant_with_key(database, "acme")
        with fake_node_gateway(FakeNode(), database, tmp_path / "audio") as client:
            created = submit(client, key, weather_wav.read_bytes(), webhook_url=receiver.url).json()
            # Generated by the gateway and shown this once.
            secret = created["webhook_secret"]
            assert secret.startswith("whsec_")
            job = wait_for_webhook(client, created["id"], key)
            assert job["webhook_secret"] is None
        [delivery] = receiver.received
        assert verify_webhook(secret, delivery.body, delivery.headers)
        assert signing.verify(
            secret,
            delivery.body,
            delivery.headers["x-signature"],
            delivery.headers["x-webhook-timestamp"],
        )
        tampered = delivery.body.replace(b'"completed"', b'"failed"', 1)
        assert tampered != delivery.body
        assert not verify_webhook(secret, tampered, delivery.headers)
        later = {**delivery.headers, "x-webhook-timestamp": str(int(time.time()) + 5)}
        assert not verify_webhook(secret, delivery.body, later)
        assert not verify_webhook("another-secret-entirely-000000", delivery.body, delivery.headers)
        # A captured delivery replayed after the window is refused.
        stated = json.loads(delivery.body)["timestamp"]
        assert not signing.verify(
            secret,
            delivery.body,
            delivery.headers["x-signature"],
            str(stated),
            now=stated + signing.REPLAY_WINDOW_SECONDS + 1,
        )

    def test_a_receiver_that_keeps_failing_is_given_up_on(
        self, database: Database, tmp_path: Path, weather_wav: Path, receiver: Receiver
    ) -> None:
        receiver.statuses[:] = [503] * 10
        key = create_tenant_with_key(database, "acme")
        with fake_node_gateway(
            FakeNode(), database, tmp_path / "audio", webhook_max_attempts=3
        ) as client:
            created = submit(client, key, weather_wav.read_bytes(), webhook_url=receiver.url)
            job = wait_for_webhook(client, created.json()["id"], key)
        assert job["status"] == "completed"
        assert job["webhook"]["status"] == "failed"
        assert [entry["status_code"] for entry in job["webhook"]["deliveries"]] == [503] * 3
        assert len(receiver.received) == 3


class TestTargets:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:9/hook",
            "http://[::1]/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:127.0.0.1]/hook",
            # IPv6 forms carrying an internal IPv4 address: compatible, NAT64, 6to4, Teredo.
            "http://[::127.0.0.1]:8000/x",
            "http://[64:ff9b::a9fe:a9fe]/latest",
            "http://[2002:7f00:1::1]:8000/x",
            "http://[2001:0:5db8:d70e::80ff:fffe]/x",
            "http://[64:ff9b:1::7f00:1]/x",
            # Spellings the C resolver reads as 127.0.0.1.
            "http://127.1:8000/x",
            "http://2130706433/x",
            "http://localhost:8000/x",
            "ftp://8.8.8.8/hook",
            "file:///etc/passwd",
            "http://user:password@8.8.8.8/hook",
            "http:///no-host",
        ],
    )
    def test_unsafe_urls_are_refused_at_submission(
        self, sqlite_url: str, tmp_path: Path, weather_wav: Path, url: str
    ) -> None:
        upgrade_to_head(sqlite_url)
        database = Database(sqlite_url)
        try:
            key = create_tenant_with_key(database, "acme")
            with fake_node_gateway(
                FakeNode(), database, tmp_path / "audio", webhook_allow_private=False
            ) as client:
                response = submit(client, key, weather_wav.read_bytes(), webhook_url=url)
                assert response.status_code == 400, response.text
                assert response.json()["error"]["code"] == "invalid_webhook_url"
                assert response.json()["error"]["param"] == "webhook_url"
                listed = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
                assert listed.json()["data"] == []
        finally:
            database.dispose()

    def test_delivery_connects_to_the_checked_address(self) -> None:
        target = WebhookTarget(
            url="https://hooks.example.com:8443/asr?x=1",
            host="hooks.example.com",
            address=ipaddress.ip_address("93.184.215.14"),
        )
        assert target.pinned_url() == "https://93.184.215.14:8443/asr?x=1"
        assert target.host_header() == "hooks.example.com:8443"
        v6 = WebhookTarget(
            url="http://hooks.example.com/asr",
            host="hooks.example.com",
            address=ipaddress.ip_address("2606:4700::1111"),
        )
        assert v6.pinned_url() == "http://[2606:4700::1111]/asr"

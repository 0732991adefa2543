"""The senders of one process: a tenant whose endpoint stalls holds one sender at a time, so
another tenant's webhook still goes out; an attempt past its deadline is a failed, retried
attempt in the delivery log."""

from __future__ import annotations

from pathlib import Path

from billing.db import Database
from gateway.jobs.webhooks.senders import TenantTurns
from tests.fixtures.factories import create_tenant_with_key
from tests.gateway.jobs.conftest import FakeNode, fake_node_gateway, submit, wait_for_status
from tests.gateway.jobs.test_webhooks import wait_for_webhook
from tests.gateway.jobs.webhooks.peers import dripping_receiver, held_receiver, quick_receiver

A, B, C = 1, 2, 3


class TestTenantTurns:
    def test_tenants_never_served_come_first_in_the_given_order(self) -> None:
        turns = TenantTurns()
        assert turns.order([C, A, B]) == [C, A, B]

    def test_a_tenant_at_its_limit_is_skipped(self) -> None:
        turns = TenantTurns(per_tenant=1)
        turns.start(A)
        assert turns.order([A, B]) == [B]
        turns.finish(A)
        assert turns.order([A, B]) == [B, A]

    def test_a_backlogged_tenant_takes_its_turn_in_a_round(self) -> None:
        # One sender; A's backlog is always the longest waiting.
        turns = TenantTurns()
        served = []
        for _ in range(6):
            tenant = turns.order([A, B, C])[0]
            turns.start(tenant)
            served.append(tenant)
            turns.finish(tenant)
        assert served == [A, B, C, A, B, C]


class TestFairSharing:
    def test_a_stalled_tenant_does_not_hold_back_another_tenants_webhook(
        self, database: Database, tmp_path: Path, weather_wav: Path
    ) -> None:
        key_a = create_tenant_with_key(database, "stalled")
        key_b = create_tenant_with_key(database, "prompt")
        audio = weather_wav.read_bytes()
        headers_a = {"Authorization": f"Bearer {key_a}"}
        with (
            held_receiver() as stalled,
            quick_receiver() as prompt,
            fake_node_gateway(
                FakeNode(),
                database,
                tmp_path / "audio",
                webhook_senders=2,
                webhook_timeout_seconds=120,
            ) as client,
        ):
            jobs_a = [
                submit(client, key_a, audio, webhook_url=stalled.url).json()["id"] for _ in range(3)
            ]
            for job_id in jobs_a:
                wait_for_status(client, job_id, headers_a, {"completed"})
            # All three of A's webhooks are due, and one is held open by A's endpoint.
            assert stalled.arrived.wait(30)
            created = submit(client, key_b, audio, webhook_url=prompt.url)
            assert created.status_code == 201, created.text

            assert prompt.arrived.wait(30), "B's webhook waited behind A's endpoint"
            # A's endpoint is still holding its one delivery: B did not wait for A's deadline.
            assert not stalled.release.is_set()
            assert stalled.in_flight == 1
            assert stalled.most_in_flight == 1
            pending = [
                client.get(f"/v1/jobs/{job_id}", headers=headers_a).json()["webhook"]
                for job_id in jobs_a
            ]
            assert [webhook["status"] for webhook in pending] == ["pending"] * 3
            assert all(webhook["deliveries"] == [] for webhook in pending)
            job_b = wait_for_webhook(client, created.json()["id"], key_b)
            assert job_b["webhook"]["status"] == "delivered"
            assert job_b["webhook"]["deliveries"][0]["status_code"] == 204


class TestDeadline:
    def test_an_attempt_past_its_deadline_is_logged_as_a_timeout_and_retried(
        self, database: Database, tmp_path: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with (
            dripping_receiver() as dripping,
            fake_node_gateway(
                FakeNode(),
                database,
                tmp_path / "audio",
                webhook_timeout_seconds=0.5,
                webhook_max_attempts=2,
            ) as client,
        ):
            created = submit(client, key, weather_wav.read_bytes(), webhook_url=dripping.url)
            job = wait_for_webhook(client, created.json()["id"], key)
        assert job["status"] == "completed"
        assert job["webhook"]["status"] == "failed"
        assert job["webhook"]["attempts"] == 2
        log = job["webhook"]["deliveries"]
        assert [entry["attempt"] for entry in log] == [1, 2]
        assert [entry["status_code"] for entry in log] == [None, None]
        assert [entry["succeeded"] for entry in log] == [False, False]
        assert [entry["error"] for entry in log] == ["Timeout: no answer within 0.5 s"] * 2
        assert len(dripping.bodies) == 2

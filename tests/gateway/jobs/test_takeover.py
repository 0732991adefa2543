"""Two gateway processes on PostgreSQL: the one working a job is killed with SIGKILL, the
other takes the job over when the lease lapses and finishes it; one ledger row."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from billing.db import Database
from billing.migrate import upgrade_to_head
from billing.models import Job
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running
from tests.gateway.jobs.conftest import audio_left_after_the_end, reservation_states

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

LEASE_SECONDS = 2


def lease_owner(database: Database, job_id: str) -> str | None:
    with database.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.lease_owner if job.state == "processing" else None


def test_a_job_of_a_killed_gateway_is_finished_by_the_other_and_billed_once(
    node_url: str, postgres_url: str, tmp_path: Path, forty_seconds_wav: Path
) -> None:
    upgrade_to_head(postgres_url)
    database = Database(postgres_url)
    key = create_tenant_with_key(database, "acme")
    storage = tmp_path / "shared-audio"  # the directory every replica mounts
    environment = {
        "BILLING_DATABASE_URL": postgres_url,
        "GATEWAY_NODES": node_url,
        "GATEWAY_NODE_SECRET": NODE_SECRET,
        "GATEWAY_MIGRATE_ON_START": "false",
        "GATEWAY_CACHE_ENABLED": "false",
        "GATEWAY_JOB_WORKERS": "1",
        "GATEWAY_JOB_POLL_SECONDS": "0.1",
        "GATEWAY_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
        "GATEWAY_JOB_STORAGE_DIR": str(storage),
    }
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with ExitStack() as stack:
            gateways: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
            for name in ("a", "b"):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                process = stack.enter_context(
                    running(
                        ["gateway", "--port", str(port)],
                        environment,
                        f"{url}/health/live",
                        tmp_path / f"gateway-{name}.log",
                    )
                )
                gateways[process.pid] = (url, process)
            first_url = next(iter(gateways.values()))[0]
            created = httpx.post(
                f"{first_url}/v1/jobs",
                headers=headers,
                files={"file": ("forty.wav", forty_seconds_wav.read_bytes(), "audio/wav")},
                data={"model": "whisper-1", "response_format": "text"},
                timeout=30,
            )
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]

            # Whichever replica claimed it is killed while the node works on it.
            deadline = time.monotonic() + 30
            while (owner := lease_owner(database, job_id)) is None:
                assert time.monotonic() < deadline, "no replica claimed the job"
                time.sleep(0.05)
            victim_pid = int(owner.split(":")[1])
            victim_url, victim = gateways.pop(victim_pid)
            os.kill(victim_pid, signal.SIGKILL)
            victim.wait(timeout=10)
            survivor_url = next(iter(gateways.values()))[0]

            deadline = time.monotonic() + 240
            while True:
                job = httpx.get(f"{survivor_url}/v1/jobs/{job_id}", headers=headers).json()
                if job["status"] in {"completed", "failed"} or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            text = httpx.get(
                f"{survivor_url}/v1/jobs/{job_id}?response_format=text", headers=headers
            )

        assert job["status"] == "completed", job
        assert job["attempts"] == 2
        assert "weather is nice today" in text.text
        assert "tomorrow morning" in text.text
        rows = usage_rows(database)
        assert [row.request_id for row in rows] == [job_id]
        assert job["usage"]["cost_micros"] == rows[0].cost_micros
        assert account(database, "acme").spent_micros == rows[0].cost_micros
        assert account(database, "acme").reserved_micros == 0
        assert reservation_states(database) == {job_id: "settled"}
        assert audio_left_after_the_end(storage) == []
        assert victim_url != survivor_url
    finally:
        database.dispose()

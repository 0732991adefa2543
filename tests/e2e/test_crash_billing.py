"""Money through crashes: gateways SIGKILLed again and again while clients retry with
``Idempotency-Key``. Every request ends answered, billed exactly once, for what its client
received; nothing stays held; reconciliation is exact."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import select

from billing.db import Database
from billing.migrate import upgrade_to_head
from billing.models import IdempotencyRecord, Reservation, UsageEvent
from billing.models.types import utcnow
from billing.periods import billing_period
from tests.e2e.crash_harness import (
    gateway_environment,
    reconcile,
    recording,
    run_crashes,
)
from tests.fixtures.factories import account, create_tenant_with_key
from tests.fixtures.processes import ASRGW, ROOT, Restartable, free_port, running_command
from tests.fixtures.redis import delete_prefixed, shared_redis_url, unique_prefix
from tests.fixtures.standin_node import expected_transcript

# The scale: at least 500 logical requests with a kill every 2-3 s.
REQUESTS = int(os.environ.get("ASRGW_CRASH_REQUESTS", "500"))
CREDIT_MICROS = 100_000_000


@pytest.mark.postgres
@pytest.mark.e2e
class TestGatewaysKilledMidRequest:
    def test_every_request_is_answered_and_billed_once(
        self, postgres_url: str, tmp_path: Path
    ) -> None:
        redis_url = shared_redis_url()
        prefix = unique_prefix()
        upgrade_to_head(postgres_url)
        database = Database(postgres_url)
        api_key = create_tenant_with_key(
            database, "acme", prepaid=True, credit_micros=CREDIT_MICROS
        )
        try:
            run = run_crashes(postgres_url, redis_url, prefix, api_key, tmp_path, requests=REQUESTS)
            with database.transaction() as session:
                rows = session.exec(select(UsageEvent)).all()
                keys = session.exec(select(IdempotencyRecord)).all()
                open_holds = session.exec(
                    select(Reservation).where(Reservation.state == "open")
                ).all()
            totals = account(database, "acme")
        finally:
            database.dispose()
            delete_prefixed(redis_url, prefix)

        assert run.kills >= 2, "the gateways were hardly killed"
        # Every logical request eventually succeeded, with its own transcript.
        assert [a.key for a in run.answers if a.status != 200] == []
        assert all(a.text == a.expected_text for a in run.answers)
        assert run.statuses["500"] == 0
        # Exactly one usage row per key, and none for a request no client got a 200 for.
        billed = Counter(row.request_id for row in rows)
        assert len(rows) == REQUESTS
        assert max(billed.values()) == 1
        delivered = {answer.billing_request_id for answer in run.answers}
        assert set(billed) == delivered
        assert {record.request_id for record in keys} == delivered
        # What each client was told is what the ledger holds.
        by_request = {row.request_id: row.cost_micros for row in rows}
        assert all(by_request[a.billing_request_id] == a.cost_micros for a in run.answers)
        # No stuck lease, no hold left, no negative balance.
        assert {record.state for record in keys} == {"completed"}
        assert open_holds == []
        assert totals.reserved_micros == 0
        assert totals.spent_micros == sum(by_request.values())
        assert totals.available_micros == CREDIT_MICROS - totals.spent_micros >= 0
        report = reconcile(postgres_url, billing_period(utcnow()))
        assert report.returncode == 0, report.stdout + report.stderr


@pytest.mark.postgres
@pytest.mark.e2e
class TestBatchClientThroughACrash:
    def test_a_rerun_finishes_every_file_and_pays_each_once(
        self, postgres_url: str, tmp_path: Path
    ) -> None:
        upgrade_to_head(postgres_url)
        database = Database(postgres_url)
        api_key = create_tenant_with_key(database, "acme")
        inputs = tmp_path / "in"
        inputs.mkdir()
        files = 12
        for index in range(files):
            (inputs / f"take-{index:02d}.wav").write_bytes(recording(1000 + index))
        node_port, gateway_port = free_port(), free_port()
        node_url, gateway_url = f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{gateway_port}"
        node_command = [
            sys.executable, "-m", "uvicorn", "tests.fixtures.standin_node:app",
            "--port", str(node_port), "--no-access-log",
        ]  # fmt: skip
        environment = gateway_environment(postgres_url, node_url, "", unique_prefix())
        gateway = Restartable(
            [*ASRGW, "gateway", "--port", str(gateway_port)],
            environment,
            f"{gateway_url}/health/ready",
            tmp_path / "gateway.log",
        )
        out = tmp_path / "out"
        client = [
            *ASRGW, "transcribe", str(inputs), "--out", str(out), "--url", gateway_url,
            "--concurrency", "2", "--max-retries", "2",
        ]  # fmt: skip
        client_env = {**os.environ, "ASRGW_API_KEY": api_key}
        try:
            with (
                running_command(
                    node_command,
                    {"STANDIN_DELAY_MS": "1000,1500"},  # the kill lands mid-run
                    f"{node_url}/health/ready",
                    tmp_path / "node.log",
                ),
                gateway,
            ):
                first = subprocess.Popen(client, env=client_env, cwd=ROOT)
                try:
                    _wait_for_outputs(out, at_least=3, process=first)
                    gateway.kill()  # mid-run, with requests in flight
                    first_exit = first.wait(timeout=300)
                finally:
                    if first.poll() is None:
                        first.kill()
                        first.wait()
                gateway.start()
                done_before = len(list(out.glob("*.txt")))
                rerun = subprocess.run(
                    client, env=client_env, cwd=ROOT, capture_output=True, text=True, timeout=300
                )
            with database.transaction() as session:
                rows = session.exec(select(UsageEvent)).all()
                keys = session.exec(select(IdempotencyRecord)).all()
        finally:
            database.dispose()

        assert first_exit == 1  # it could not finish: its gateway died under it
        assert 3 <= done_before < files
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        for index in range(files):
            written = (out / f"take-{index:02d}.txt").read_text().strip()
            assert written == expected_transcript(recording(1000 + index))
        # One usage row per file, each under the key of that file.
        assert len(rows) == files
        assert len({row.request_id for row in rows}) == files
        assert {row.request_id for row in rows} == {r.request_id for r in keys}


def _wait_for_outputs(out: Path, *, at_least: int, process: subprocess.Popen[bytes]) -> None:
    """Until ``at_least`` transcripts are written (a condition awaited, not a timing asserted)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(list(out.glob("*.txt"))) >= at_least:
            return
        if process.poll() is not None:
            raise AssertionError(f"the batch client ended early with {process.returncode}")
        time.sleep(0.05)
    raise AssertionError("the batch client wrote no transcripts")

"""Ten minutes of speech as a job: the same transcript as the synchronous path, billed once.

Each path gets a node process of its own, freshly started, and the two run at the same time (a
PocketSphinx node decodes on one core), so neither waits behind the other's ten minutes. The
job runs on the PostgreSQL ledger only: what a job writes is the same on both ledgers and is
tested on both with short audio; here the length is what is tested.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from billing.config import BillingSettings
from billing.db import Database
from billing.migrate import upgrade_to_head
from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.nodes import node_process
from tests.gateway.jobs.conftest import (
    audio_left_after_the_end,
    reservation_states,
    start_gateway,
    submit,
    wait_for_status,
)

TEN_MINUTES_BYTES = 20 * 1024 * 1024


@pytest.fixture
def fresh_node(tmp_path: Path) -> Iterator[str]:
    with node_process(tmp_path, "pocketsphinx-en") as url:
        yield url


def transcribe_synchronously(ten_minutes_wav: Path, directory: Path, url: str, key: str) -> str:
    """The ten minutes through POST /v1/audio/transcriptions, allowed that long for this. The
    ledger is migrated beforehand: alembic's migration context is process-wide, and the job's
    gateway migrates its own ledger meanwhile."""
    settings = GatewaySettings(
        node_secret=NODE_SECRET,
        max_upload_bytes=TEN_MINUTES_BYTES,
        max_sync_audio_seconds=601,
        cache_enabled=False,
        migrate_on_start=False,
    )
    with (
        node_process(directory, "pocketsphinx-en") as node_url,
        TestClient(
            create_app(
                settings.model_copy(update={"nodes": node_url}),
                BillingSettings(database_url=url),
            )
        ) as client,
    ):
        response = client.post(
            "/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": ("ten.wav", ten_minutes_wav.read_bytes(), "audio/wav")},
            data={"model": "whisper-1", "response_format": "text"},
        )
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture
def synchronous_transcript(
    ten_minutes_wav: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Future[str]]:
    """The synchronous path's transcript, decoded on a worker thread while the test runs."""
    directory = tmp_path_factory.mktemp("sync")
    url = f"sqlite:///{directory / 'ledger.db'}"
    upgrade_to_head(url)
    database = Database(url)
    try:
        key = create_tenant_with_key(database, "reference")
    finally:
        database.dispose()
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor.submit(transcribe_synchronously, ten_minutes_wav, directory, url, key)


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_ten_minute_job_matches_the_synchronous_transcript_and_is_billed_once(
    fresh_node: str,
    database: Database,
    tmp_path: Path,
    ten_minutes_wav: Path,
    synchronous_transcript: Future[str],
) -> None:
    key = create_tenant_with_key(database, "acme")
    storage = tmp_path / "audio"
    # No result cache: the job must be transcribed by the node, not answered from memory. The
    # default lease (30 s) rather than the jobs tests' short one: the machine is busy with two
    # transcriptions of ten minutes, and a renewal late by seconds must not hand the job over.
    with start_gateway(
        fresh_node, database, storage, cache_enabled=False, job_lease_seconds=30.0
    ) as client:
        created = submit(client, key, ten_minutes_wav.read_bytes(), response_format="text")
        assert created.status_code == 201, created.text
        assert created.json()["audio_seconds"] == pytest.approx(600, abs=0.01)
        job = wait_for_status(
            client,
            created.json()["id"],
            {"Authorization": f"Bearer {key}"},
            {"completed", "failed"},
            timeout=900,
        )
        assert job["status"] == "completed", job
        text = client.get(
            f"/v1/jobs/{job['id']}?response_format=text",
            headers={"Authorization": f"Bearer {key}"},
        )
    reference = synchronous_transcript.result(timeout=900)
    assert len(reference.split()) > 500
    assert text.text == reference
    assert job["result"] == reference
    rows = usage_rows(database)
    assert [row.request_id for row in rows] == [job["id"]]
    assert rows[0].audio_ms == 600_000
    assert job["usage"]["cost_micros"] == rows[0].cost_micros
    assert text.headers["x-billing-cost-micros"] == str(rows[0].cost_micros)
    assert account(database, "acme").spent_micros == rows[0].cost_micros
    assert reservation_states(database) == {job["id"]: "settled"}
    assert audio_left_after_the_end(storage) == []

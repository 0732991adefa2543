"""The jobs API in-process: submit, fetch in every format, list, cancel, retries, takeover of
a stopped worker, retention — on SQLite and PostgreSQL, billed exactly once or not at all."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest
from sqlmodel import select

from billing.db import Database
from billing.models import Job, ReturnedCharge
from billing.models.types import utcnow
from billing.usage.schemas import BillableTranscription
from gateway.jobs import lifecycle
from gateway.jobs.maintenance import clean_up
from gateway.jobs.storage import DirectoryAudioStore
from gateway.jobs.worker import JobWorker
from gateway.nodes import NodePool
from gateway.nodes.client import HttpxNodeClient
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.hostile_media import encode, flac_claiming
from tests.gateway.conftest import Gateway
from tests.gateway.jobs.conftest import (
    FAKE_NODE,
    FakeNode,
    audio_left_after_the_end,
    fake_node_gateway,
    jobs_settings,
    reservation_states,
    start_gateway,
    stored_audio,
    submit,
    wait_for_status,
)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def work_one(database: Database, storage: Path, node: FakeNode, **overrides: object) -> bool:
    """One claim-and-work pass of a job worker, as a gateway's worker loop runs it."""
    settings = jobs_settings(FAKE_NODE, storage, cache_enabled=False, **overrides)
    async with HttpxNodeClient(node.transport) as client:
        worker = JobWorker(
            database, NodePool(settings, client), DirectoryAudioStore(storage), settings
        )
        return await worker.work_next()


def job_row(database: Database, job_id: str) -> Job:
    with database.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


class TestSubmitAndFetch:
    def test_a_job_is_transcribed_billed_once_and_rendered_in_every_format(
        self, jobs_gateway: Gateway, weather_wav: Path, job_storage: Path
    ) -> None:
        client, key = jobs_gateway.client, jobs_gateway.key
        created = submit(client, key, weather_wav.read_bytes(), response_format="verbose_json")
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert created.json()["status"] in {"queued", "processing"}
        assert created.json()["audio_seconds"] == pytest.approx(2.1, abs=0.2)

        job = wait_for_status(client, job_id, auth(key), {"completed", "failed"})
        assert job["status"] == "completed", job
        assert job["progress"] == 1.0
        assert job["attempts"] == 1
        assert job["result"]["text"] == "the weather is nice today"
        assert job["result"]["segments"]
        rows = usage_rows(jobs_gateway.database)
        assert [row.request_id for row in rows] == [job_id]
        assert job["usage"]["output_tokens"] == rows[0].output_tokens == 21
        assert job["usage"]["cost_micros"] == rows[0].cost_micros == 420
        assert reservation_states(jobs_gateway.database) == {job_id: "settled"}
        with jobs_gateway.database.transaction() as session:
            returned = session.get(ReturnedCharge, job_id)
            assert returned is not None
            assert returned.cost_micros == 420

        text = client.get(f"/v1/jobs/{job_id}?response_format=text", headers=auth(key))
        assert text.status_code == 200
        assert text.text == "the weather is nice today"
        assert text.headers["x-billing-output-tokens"] == "21"
        assert text.headers["x-billing-cost-micros"] == "420"
        srt = client.get(f"/v1/jobs/{job_id}?response_format=srt", headers=auth(key))
        assert srt.text.startswith("1\n00:00:00,")
        vtt = client.get(f"/v1/jobs/{job_id}?response_format=vtt", headers=auth(key))
        assert vtt.text.startswith("WEBVTT\n\n")
        as_json = client.get(f"/v1/jobs/{job_id}?response_format=json", headers=auth(key))
        assert as_json.json()["text"] == "the weather is nice today"
        assert as_json.json()["usage"]["cost_micros"] == 420
        # Reading the result again bills nothing more; the audio is gone once the job ended.
        assert len(usage_rows(jobs_gateway.database)) == 1
        assert audio_left_after_the_end(job_storage) == []

    def test_bad_audio_is_refused_before_anything_is_queued(
        self, jobs_gateway: Gateway, job_storage: Path
    ) -> None:
        response = submit(jobs_gateway.client, jobs_gateway.key, b"this is not audio")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_audio"
        listed = jobs_gateway.client.get("/v1/jobs", headers=jobs_gateway.auth())
        assert listed.json()["data"] == []
        assert reservation_states(jobs_gateway.database) == {}
        assert stored_audio(job_storage) == []

    def test_a_tenant_without_credit_gets_402_and_no_job(
        self, jobs_gateway: Gateway, weather_wav: Path, job_storage: Path
    ) -> None:
        broke = create_tenant_with_key(jobs_gateway.database, "broke", prepaid=True)
        response = submit(jobs_gateway.client, broke, weather_wav.read_bytes())
        assert response.status_code == 402
        assert response.json()["error"]["code"] == "insufficient_quota"
        assert jobs_gateway.client.get("/v1/jobs", headers=auth(broke)).json()["data"] == []
        assert reservation_states(jobs_gateway.database) == {}
        assert stored_audio(job_storage) == []

    def test_the_same_idempotency_key_returns_the_same_job(
        self, jobs_gateway: Gateway, weather_wav: Path, two_sentences_wav: Path
    ) -> None:
        client, key = jobs_gateway.client, jobs_gateway.key
        first = submit(client, key, weather_wav.read_bytes(), idempotency_key="batch-1")
        again = submit(client, key, weather_wav.read_bytes(), idempotency_key="batch-1")
        assert first.status_code == 201
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        other = submit(client, key, two_sentences_wav.read_bytes(), idempotency_key="batch-1")
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        wait_for_status(client, first.json()["id"], auth(key), {"completed"})
        assert len(usage_rows(jobs_gateway.database)) == 1

    def test_the_synchronous_duration_limit_does_not_apply(
        self, node_url: str, database: Database, weather_wav: Path, job_storage: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with start_gateway(node_url, database, job_storage, max_sync_audio_seconds=1) as client:
            refused = client.post(
                "/v1/audio/transcriptions",
                headers=auth(key),
                files={"file": ("w.wav", weather_wav.read_bytes(), "audio/wav")},
                data={"model": "whisper-1"},
            )
            assert refused.status_code == 413
            assert refused.json()["error"]["code"] == "audio_too_long"
            created = submit(client, key, weather_wav.read_bytes())
            job = wait_for_status(client, created.json()["id"], auth(key), {"completed", "failed"})
        assert job["status"] == "completed"
        assert job["result"]["text"] == "the weather is nice today"


class TestJobAudioLength:
    """Jobs take long audio, measured from its packets, up to GATEWAY_JOB_MAX_AUDIO_SECONDS."""

    def test_audio_past_the_job_limit_is_refused_before_anything_is_stored(
        self, database: Database, job_storage: Path, silent_hour_flac: bytes
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        node = FakeNode()
        lying = flac_claiming(silent_hour_flac, 1)  # an hour, behind a one-second header
        with fake_node_gateway(
            node, database, job_storage, job_workers=0, job_max_audio_seconds=1800
        ) as client:
            refused = submit(client, key, lying, filename="hour.flac")
            listed = client.get("/v1/jobs", headers=auth(key)).json()["data"]
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["code"] == "audio_too_long"
        assert "jobs accept at most 1800 seconds" in error["message"]
        assert listed == []
        assert stored_audio(job_storage) == []
        assert reservation_states(database) == {}
        assert node.transcriptions == 0

    def test_a_lying_header_is_held_for_the_audio_it_holds(
        self, database: Database, job_storage: Path, speech_25s_wav: Path, tmp_path: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        flac = encode(speech_25s_wav, tmp_path / "speech.flac")
        with fake_node_gateway(FakeNode(), database, job_storage, job_workers=0) as client:
            created = submit(client, key, flac_claiming(flac, 1), filename="speech.flac")
        assert created.status_code == 201, created.text
        with database.transaction() as session:
            (job,) = session.exec(select(Job)).all()
        assert job.audio_ms == 25_000


class TestTenancy:
    def test_a_tenant_sees_only_its_own_jobs(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        mine = create_tenant_with_key(database, "mine")
        theirs = create_tenant_with_key(database, "theirs")
        with fake_node_gateway(FakeNode(), database, job_storage, job_workers=0) as client:
            job_id = submit(client, mine, weather_wav.read_bytes()).json()["id"]
            for method, path in [
                ("GET", f"/v1/jobs/{job_id}"),
                ("GET", f"/v1/jobs/{job_id}?response_format=text"),
                ("DELETE", f"/v1/jobs/{job_id}"),
            ]:
                response = client.request(method, path, headers=auth(theirs))
                assert response.status_code == 404, (method, path)
                assert response.json()["error"]["code"] == "not_found"
            assert client.get("/v1/jobs", headers=auth(theirs)).json()["data"] == []
            assert [
                job["id"] for job in client.get("/v1/jobs", headers=auth(mine)).json()["data"]
            ] == [job_id]
            assert client.get(f"/v1/jobs/{job_id}", headers=auth(mine)).json()["status"] == "queued"

    def test_the_list_pages_newest_first(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with fake_node_gateway(FakeNode(), database, job_storage, job_workers=0) as client:
            ids = [submit(client, key, weather_wav.read_bytes()).json()["id"] for _ in range(3)]
            first = client.get("/v1/jobs?limit=2", headers=auth(key)).json()
            assert [job["id"] for job in first["data"]] == ids[::-1][:2]
            assert first["has_more"] is True
            assert first["data"][0]["result"] is None
            rest = client.get(
                f"/v1/jobs?limit=2&after={first['last_id']}", headers=auth(key)
            ).json()
            assert [job["id"] for job in rest["data"]] == [ids[0]]
            assert rest["has_more"] is False
            queued = client.get("/v1/jobs?status=completed", headers=auth(key)).json()
            assert queued["data"] == []


class TestCancel:
    def test_a_cancelled_queued_job_is_never_processed_nor_billed(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        node = FakeNode()
        with fake_node_gateway(node, database, job_storage, job_workers=0) as client:
            job_id = submit(client, key, weather_wav.read_bytes()).json()["id"]
            assert reservation_states(database) == {job_id: "open"}
            cancelled = client.delete(f"/v1/jobs/{job_id}", headers=auth(key))
            assert cancelled.status_code == 200
            assert cancelled.json()["status"] == "cancelled"
            result = client.get(f"/v1/jobs/{job_id}?response_format=text", headers=auth(key))
            assert result.status_code == 409
            assert result.json()["error"]["code"] == "job_not_completed"
        # A worker that comes along afterwards finds nothing to do.
        assert anyio.run(work_one, database, job_storage, node) is False
        assert node.transcriptions == 0
        assert job_row(database, job_id).state == "cancelled"
        assert usage_rows(database) == []
        assert reservation_states(database) == {job_id: "released"}
        assert account(database, "acme").reserved_micros == 0
        assert stored_audio(job_storage) == []

    def test_cancelling_a_processing_job_stops_it_and_bills_nothing(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        node = FakeNode(delay_seconds=2.0)
        with fake_node_gateway(node, database, job_storage, job_lease_seconds=0.6) as client:
            job_id = submit(client, key, weather_wav.read_bytes()).json()["id"]
            wait_for_status(client, job_id, auth(key), {"processing"})
            assert client.delete(f"/v1/jobs/{job_id}", headers=auth(key)).json()["status"] == (
                "cancelled"
            )
            time.sleep(2.5)  # the node answers; the worker has let the job go by then
            assert client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()["status"] == (
                "cancelled"
            )
        assert usage_rows(database) == []
        assert reservation_states(database) == {job_id: "released"}

    def test_deleting_a_finished_job_erases_its_result(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with fake_node_gateway(FakeNode(), database, job_storage) as client:
            job_id = submit(client, key, weather_wav.read_bytes()).json()["id"]
            wait_for_status(client, job_id, auth(key), {"completed"})
            erased = client.delete(f"/v1/jobs/{job_id}", headers=auth(key)).json()
            assert erased["status"] == "completed"
            assert erased["result"] is None
            assert erased["result_expired"] is True
            gone = client.get(f"/v1/jobs/{job_id}?response_format=text", headers=auth(key))
            assert gone.status_code == 410
            assert gone.json()["error"]["code"] == "result_expired"
        assert len(usage_rows(database)) == 1  # what was billed stays billed


class TestRetries:
    def test_a_node_outage_puts_the_job_back_and_it_completes_billed_once(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        node = FakeNode(statuses=[503])
        with fake_node_gateway(node, database, job_storage) as client:
            job_id = submit(client, key, weather_wav.read_bytes()).json()["id"]
            job = wait_for_status(client, job_id, auth(key), {"completed", "failed"})
        assert job["status"] == "completed"
        assert job["attempts"] == 2
        assert node.transcriptions == 2
        assert [row.request_id for row in usage_rows(database)] == [job_id]
        assert reservation_states(database) == {job_id: "settled"}

    def test_a_job_out_of_attempts_fails_and_bills_nothing(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        node = FakeNode(statuses=[503, 503, 503])
        with fake_node_gateway(node, database, job_storage, job_max_attempts=2) as client:
            job_id = submit(client, key, weather_wav.read_bytes()).json()["id"]
            job = wait_for_status(client, job_id, auth(key), {"completed", "failed"})
        assert job["status"] == "failed"
        assert job["attempts"] == 2
        assert job["error"]["code"] == "upstream_unavailable"
        assert usage_rows(database) == []
        assert reservation_states(database) == {job_id: "released"}
        assert audio_left_after_the_end(job_storage) == []

    def test_a_worker_that_stopped_mid_job_is_taken_over_and_billed_once(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        """The in-process form of the SIGKILL test: a claim whose lease lapses (its worker
        stopped renewing) is taken over; the first worker's late result is dropped."""
        key = create_tenant_with_key(database, "acme")
        with fake_node_gateway(FakeNode(), database, job_storage, job_workers=0) as client:
            job_id = submit(client, key, weather_wav.read_bytes()).json()["id"]
        stalled = lifecycle.claim_next(database, "stalled", lease_seconds=0.2, max_attempts=3)
        assert stalled is not None
        assert stalled.job.id == job_id
        time.sleep(0.3)
        assert anyio.run(work_one, database, job_storage, FakeNode()) is True
        job = job_row(database, job_id)
        assert job.state == "completed"
        assert job.attempts == 2
        result = lifecycle.TranscriptionResult.model_validate_json(job.result or "")
        billable = BillableTranscription(
            request_id=job_id,
            caller=stalled.caller,
            model=result.model,
            audio_ms=round(result.duration * 1000),
            transcript=result.text,
        )
        late = lifecycle.complete(database, stalled, billable, result)
        assert late is None
        assert [row.request_id for row in usage_rows(database)] == [job_id]
        assert reservation_states(database) == {job_id: "settled"}


class TestShutdown:
    def test_a_job_in_progress_goes_back_to_the_queue_without_using_an_attempt(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with fake_node_gateway(FakeNode(delay_seconds=30), database, job_storage) as client:
            job_id = submit(client, key, weather_wav.read_bytes()).json()["id"]
            wait_for_status(client, job_id, auth(key), {"processing"})
        job = job_row(database, job_id)
        assert job.state == "queued"
        assert job.attempts == 0
        assert job.lease_owner is None
        assert reservation_states(database) == {job_id: "open"}
        assert stored_audio(job_storage) == [f"{job_id}.audio"]
        # The next gateway (here, one pass of a worker) finishes it.
        assert anyio.run(work_one, database, job_storage, FakeNode()) is True
        assert job_row(database, job_id).state == "completed"
        assert [row.request_id for row in usage_rows(database)] == [job_id]


class TestRetention:
    def test_results_past_retention_are_erased_and_charges_kept(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with fake_node_gateway(FakeNode(), database, job_storage) as client:
            job_id = submit(client, key, weather_wav.read_bytes()).json()["id"]
            wait_for_status(client, job_id, auth(key), {"completed"})
            settings = jobs_settings(FAKE_NODE, job_storage, job_result_retention_seconds=0.001)
            clean_up(database, DirectoryAudioStore(job_storage), settings)
            job = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
            assert job["result_expired"] is True
            assert job["result"] is None
            assert job["usage"]["output_tokens"] == 20
            gone = client.get(f"/v1/jobs/{job_id}?response_format=srt", headers=auth(key))
            assert gone.status_code == 410

    def test_a_job_past_its_deadline_fails_and_its_reservation_is_released(
        self, database: Database, job_storage: Path, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        with fake_node_gateway(
            FakeNode(), database, job_storage, job_workers=0, job_deadline_seconds=0.1
        ) as client:
            job_id = submit(client, key, weather_wav.read_bytes()).json()["id"]
            time.sleep(0.2)
            clean_up(
                database, DirectoryAudioStore(job_storage), jobs_settings(FAKE_NODE, job_storage)
            )
            job = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
        assert job["status"] == "failed"
        assert job["error"]["code"] == "job_expired"
        assert reservation_states(database) == {job_id: "released"}
        assert stored_audio(job_storage) == []

    def test_audio_whose_job_never_came_to_be_is_deleted(
        self, database: Database, job_storage: Path
    ) -> None:
        store = DirectoryAudioStore(job_storage)
        store.put("job_orphan", b"audio of a submission that died")
        store.put("job_recent", b"audio of a submission in progress")
        two_hours_ago = time.time() - 7200
        os.utime(job_storage / "job_orphan.audio", (two_hours_ago, two_hours_ago))
        clean_up(database, store, jobs_settings(FAKE_NODE, job_storage), now=utcnow())
        assert stored_audio(job_storage) == ["job_recent.audio"]
        with database.transaction() as session:
            assert session.exec(select(Job)).all() == []

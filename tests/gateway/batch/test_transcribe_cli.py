"""``asrgw transcribe`` against a real gateway process and node: a folder of short, corrupt and
long files; resume; retries honouring Retry-After."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billing.db import Database
from billing.migrate import upgrade_to_head
from gateway.batch.client import GatewayClient, RequestFailed
from gateway.batch.scan import plan
from tests.conftest import NODE_SECRET
from tests.fixtures.audio import speak
from tests.fixtures.factories import create_tenant_with_key, usage_rows
from tests.fixtures.processes import asrgw, free_port, running
from tests.inference.conftest import SENTENCES

pytestmark = pytest.mark.e2e

LONG_SECONDS = 30  # the batch's threshold: the forty-second file goes as a job


@pytest.fixture
def folder(tmp_path: Path, speech_dir: Path, forty_seconds_wav: Path) -> Path:
    """Twenty files: seventeen short sentences (some in a subfolder), two corrupt, one long."""
    root = tmp_path / "recordings"
    (root / "day-2").mkdir(parents=True)
    texts = [*SENTENCES, "thank you and good night"]
    for index, text in enumerate(texts):
        target = root / ("day-2" if index % 3 == 0 else "") / f"clip-{index:02d}.wav"
        source = speech_dir / f"batch-{index}.wav"
        if not source.exists():
            speak(text, source)
        shutil.copy(source, target)
    (root / "corrupt-text.wav").write_bytes(b"this is not audio at all, just text")
    (root / "day-2" / "truncated.mp3").write_bytes(
        b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 64
    )
    shutil.copy(forty_seconds_wav, root / "long-interview.wav")
    assert len([p for p in root.rglob("*") if p.is_file()]) == 20
    return root


@pytest.fixture
def gateway(node_url: str, tmp_path: Path) -> Iterator[tuple[str, str, Database]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_to_head(url)
    database = Database(url)
    key = create_tenant_with_key(database, "acme")
    port = free_port()
    environment = {
        "BILLING_DATABASE_URL": url,
        "GATEWAY_NODES": node_url,
        "GATEWAY_NODE_SECRET": NODE_SECRET,
        "GATEWAY_JOB_POLL_SECONDS": "0.1",
        "GATEWAY_JOB_STORAGE_DIR": str(tmp_path / "job-audio"),
    }
    base = f"http://127.0.0.1:{port}"
    with running(
        ["gateway", "--port", str(port)], environment, f"{base}/health/live", tmp_path / "gw.log"
    ):
        yield base, key, database
    database.dispose()


def run_batch(base: str, key: str, *arguments: str) -> tuple[int, str, str]:
    done = asrgw(
        "transcribe",
        *arguments,
        env={"ASRGW_API_KEY": key, "ASRGW_BASE_URL": base},
    )
    return done.returncode, done.stdout, done.stderr


class TestBatch:
    def test_a_folder_with_corrupt_and_long_files_then_a_rerun(
        self, gateway: tuple[str, str, Database], folder: Path, tmp_path: Path
    ) -> None:
        base, key, database = gateway
        out = tmp_path / "transcripts"
        arguments = [str(folder), "--out", str(out), "--format", "txt", "--concurrency", "4"]
        arguments += ["--long-seconds", str(LONG_SECONDS)]
        code, stdout, stderr = run_batch(base, key, *arguments)

        assert code == 1, stdout + stderr
        transcripts = sorted(p.relative_to(out) for p in out.rglob("*.txt"))
        assert len(transcripts) == 18
        assert Path("day-2/clip-00.txt") in transcripts
        assert Path("long-interview.txt") in transcripts
        assert (out / "clip-01.txt").read_text() == "please call me tomorrow morning"
        long_text = (out / "long-interview.txt").read_text()
        assert "the weather is nice today" in long_text
        assert len(long_text.split()) > 40
        assert "done 18 · failed 2 · skipped 0" in stdout
        assert "corrupt-text.wav: HTTP 400 invalid_audio" in stderr
        assert "truncated.mp3: HTTP 400 invalid_audio" in stderr

        summary = json.loads((out / "asrgw-transcribe-summary.json").read_text())
        assert summary["done"] == 18
        assert summary["failed"] == 2
        assert {Path(f["file"]).name for f in summary["failures"]} == {
            "corrupt-text.wav",
            "truncated.mp3",
        }
        assert all("invalid_audio" in f["reason"] for f in summary["failures"])
        rows = usage_rows(database)
        assert len(rows) == 18
        assert summary["output_tokens"] == sum(row.output_tokens for row in rows)
        assert summary["cost_micros"] == {"USD": sum(row.cost_micros for row in rows)}
        assert [row.request_id.startswith("job_") for row in rows].count(True) == 1
        log = (out / "asrgw-transcribe.log").read_text().splitlines()
        assert sum('"status": "done"' in line for line in log) == 18
        assert sum('"status": "failed"' in line for line in log) == 2
        assert any('"via": "job"' in line for line in log)

        written = {path: path.stat().st_mtime_ns for path in out.rglob("*.txt")}
        code, stdout, _ = run_batch(base, key, *arguments)
        assert code == 1
        assert "done 0 · failed 2 · skipped 18" in stdout
        assert {path: path.stat().st_mtime_ns for path in out.rglob("*.txt")} == written
        assert len(usage_rows(database)) == 18

    def test_subtitles_of_one_file_and_a_clean_exit(
        self, gateway: tuple[str, str, Database], two_sentences_wav: Path, tmp_path: Path
    ) -> None:
        base, key, _ = gateway
        out = tmp_path / "subtitles"
        code, stdout, stderr = run_batch(
            base, key, str(two_sentences_wav), "--out", str(out), "--format", "srt"
        )
        assert code == 0, stdout + stderr
        srt = (out / "two-sentences.srt").read_text()
        assert srt.startswith("1\n00:00:00,")
        assert "\n2\n" in srt
        assert "done 1 · failed 0 · skipped 0" in stdout

    def test_without_a_key_it_refuses_to_start(self, tmp_path: Path, weather_wav: Path) -> None:
        done = asrgw("transcribe", str(weather_wav), "--out", str(tmp_path), env={})
        assert done.returncode == 2
        assert "ASRGW_API_KEY" in done.stderr


class TestRetries:
    def client(
        self, statuses: list[tuple[int, dict[str, str]]]
    ) -> tuple[GatewayClient, list[float]]:
        waits: list[float] = []

        def handle(_request: httpx.Request) -> httpx.Response:
            status, headers = statuses.pop(0) if statuses else (200, {})
            body = {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}
            return httpx.Response(
                status, json=body if status != 200 else {"ok": True}, headers=headers
            )

        http = httpx.Client(transport=httpx.MockTransport(handle), base_url="http://gateway")
        return GatewayClient(http, max_retries=3, sleep=waits.append), waits

    def test_429_and_503_are_retried_after_retry_after(self) -> None:
        client, waits = self.client([(429, {"Retry-After": "7"}), (503, {"Retry-After": "2"})])
        assert client.request("GET", "/v1/jobs").json() == {"ok": True}
        assert waits == [7.0, 2.0]

    def test_without_retry_after_the_backoff_grows(self) -> None:
        client, waits = self.client([(503, {}), (503, {}), (502, {})])
        client.request("GET", "/v1/jobs")
        assert len(waits) == 3
        assert 0.5 <= waits[0] <= 1.0
        assert 1.0 <= waits[1] <= 2.0
        assert 2.0 <= waits[2] <= 4.0

    def test_retries_are_bounded_and_refusals_are_not_retried(self) -> None:
        client, waits = self.client([(429, {"Retry-After": "1"})] * 5)
        with pytest.raises(RequestFailed, match="HTTP 429 rate_limit_exceeded"):
            client.request("GET", "/v1/jobs")
        assert waits == [1.0, 1.0, 1.0]
        client, waits = self.client([(400, {})])
        with pytest.raises(RequestFailed) as refused:
            client.request("GET", "/v1/jobs")
        assert refused.value.status_code == 400
        assert waits == []


def test_outputs_mirror_the_folders_and_never_collide(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    for name in ("a/talk.wav", "a/talk.mp3", "notes.txt", "b.flac"):
        (root / name).write_bytes(b"x")
    items = plan([root], tmp_path / "out", "vtt")
    outputs = sorted(str(item.output.relative_to(tmp_path / "out")) for item in items)
    assert outputs == ["a/talk.vtt", "a/talk.wav.vtt", "b.vtt"]

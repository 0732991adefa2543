"""Transcribe a batch: short files synchronously, long ones as jobs, a few at a time; skip
what is done already; report and log every outcome.

A transcript is written under a temporary name and renamed, so a file that exists is whole:
a rerun skips it (resume). Jobs are submitted with an ``Idempotency-Key`` derived from the
audio and the parameters, so a rerun after an interruption finds the job it submitted before
instead of paying for a second one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.batch.client import GatewayClient, RequestFailed, idempotency_key
from gateway.batch.progress import Progress
from gateway.batch.scan import BatchItem

logger = logging.getLogger("asrgw.transcribe")

# The gateway's response format for each output format.
RESPONSE_FORMATS = {"txt": "text", "srt": "srt", "vtt": "vtt", "json": "verbose_json"}
FINISHED = frozenset({"completed", "failed", "cancelled"})
MAX_POLL_SECONDS = 15.0


@dataclass(frozen=True)
class BatchOptions:
    output_format: str = "txt"
    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    concurrency: int = 4
    # Audio longer than this goes as a job (so does audio the gateway refuses as too long).
    long_seconds: float = 300.0
    poll_seconds: float = 2.0


@dataclass(frozen=True)
class Outcome:
    item: BatchItem
    status: str  # done · failed · skipped
    audio_seconds: float = 0.0
    via: str = ""  # sync · job
    job_id: str | None = None
    output_tokens: int = 0
    cost_micros: int = 0
    currency: str = ""
    reason: str | None = None


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]

    def cost_by_currency(self) -> dict[str, int]:
        costs: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.currency:
                costs[outcome.currency] = costs.get(outcome.currency, 0) + outcome.cost_micros
        return costs

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": self.count("done"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "output_tokens": sum(outcome.output_tokens for outcome in self.outcomes),
            "cost_micros": self.cost_by_currency(),
            "audio_seconds": round(sum(o.audio_seconds for o in self.outcomes), 3),
            "failures": [
                {"file": str(outcome.item.source), "reason": outcome.reason}
                for outcome in self.failed
            ],
        }


def local_duration_seconds(path: Path) -> float | None:
    """The audio's length as its container states it, read from the file's headers only (not
    the whole file); None when the container does not say or cannot be read: the gateway
    probes it properly, and answers ``audio_too_long`` if it must go as a job after all."""
    import av

    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            if container.duration:
                return float(container.duration / av.time_base)
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None
    return None


class BatchRunner:
    def __init__(
        self,
        client: GatewayClient,
        options: BatchOptions,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.options = options
        self.sleep = sleep

    def run(self, items: list[BatchItem], progress_stream: Any = None) -> Summary:
        durations = {item.source: local_duration_seconds(item.source) for item in items}
        progress = Progress(
            len(items), sum(seconds or 0.0 for seconds in durations.values()), progress_stream
        )
        progress.start()
        summary = Summary()

        def work(item: BatchItem) -> Outcome:
            outcome = self.transcribe(item, durations[item.source])
            log_outcome(outcome)
            progress.advance(
                outcome.audio_seconds,
                failed=outcome.status == "failed",
                skipped=outcome.status == "skipped",
            )
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, self.options.concurrency)) as pool:
            summary.outcomes = list(pool.map(work, items))
        progress.finish()
        return summary

    def transcribe(self, item: BatchItem, duration: float | None) -> Outcome:
        seconds = duration or 0.0
        if item.output.exists():
            return Outcome(item, "skipped", seconds)
        try:
            audio = item.source.read_bytes()
            if duration is not None and duration > self.options.long_seconds:
                return self._as_job(item, audio, seconds)
            try:
                return self._sync(item, audio, seconds)
            except RequestFailed as refusal:
                if refusal.code != "audio_too_long":
                    raise
                return self._as_job(item, audio, seconds)
        except RequestFailed as failure:
            return Outcome(item, "failed", seconds, reason=failure.reason)
        except OSError as error:
            return Outcome(item, "failed", seconds, reason=f"{type(error).__name__}: {error}")

    def _form(self) -> dict[str, str]:
        form = {"model": self.options.model, "response_format": self._response_format()}
        if self.options.language:
            form["language"] = self.options.language
        if self.options.prompt:
            form["prompt"] = self.options.prompt
        return form

    def _response_format(self) -> str:
        return RESPONSE_FORMATS[self.options.output_format]

    def _sync(self, item: BatchItem, audio: bytes, seconds: float) -> Outcome:
        form = self._form()
        response = self.client.request(
            "POST",
            "/v1/audio/transcriptions",
            files={"file": (item.source.name, audio, "application/octet-stream")},
            data=form,
            headers={"Idempotency-Key": idempotency_key(audio, {"sync": True, **form})},
        )
        write_atomically(item.output, response.content)
        return billed_outcome(item, response, seconds, via="sync")

    def _as_job(self, item: BatchItem, audio: bytes, seconds: float) -> Outcome:
        form = self._form()
        created = self.client.request(
            "POST",
            "/v1/jobs",
            files={"file": (item.source.name, audio, "application/octet-stream")},
            data=form,
            headers={"Idempotency-Key": idempotency_key(audio, {"job": True, **form})},
        ).json()
        job_id = str(created["id"])
        job = created
        wait = self.options.poll_seconds
        while job["status"] not in FINISHED:
            self.sleep(wait)
            wait = min(wait * 1.5, MAX_POLL_SECONDS)
            job = self.client.request("GET", f"/v1/jobs/{job_id}").json()
        if job["status"] != "completed":
            error = job.get("error") or {}
            reason = f"job {job_id} {job['status']}"
            if error:
                reason += f": {error.get('code')}: {error.get('message')}"
            return Outcome(item, "failed", seconds, via="job", job_id=job_id, reason=reason)
        response = self.client.request(
            "GET", f"/v1/jobs/{job_id}", params={"response_format": self._response_format()}
        )
        write_atomically(item.output, response.content)
        outcome = billed_outcome(item, response, seconds, via="job")
        return Outcome(**{**outcome.__dict__, "job_id": job_id})


def billed_outcome(
    item: BatchItem, response: httpx.Response, seconds: float, *, via: str
) -> Outcome:
    headers = response.headers
    return Outcome(
        item,
        "done",
        seconds,
        via=via,
        output_tokens=int(headers.get("x-billing-output-tokens", 0)),
        cost_micros=int(headers.get("x-billing-cost-micros", 0)),
        currency=headers.get("x-billing-currency", ""),
    )


def write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def log_outcome(outcome: Outcome) -> None:
    details = {
        "status": outcome.status,
        "file": str(outcome.item.source),
        "output": str(outcome.item.output) if outcome.status == "done" else None,
        "via": outcome.via or None,
        "job_id": outcome.job_id,
        "audio_seconds": round(outcome.audio_seconds, 3),
        "output_tokens": outcome.output_tokens,
        "cost_micros": outcome.cost_micros,
        "reason": outcome.reason,
    }
    line = json.dumps({key: value for key, value in details.items() if value is not None})
    if outcome.status == "failed":
        logger.warning(line)
    else:
        logger.info(line)


def open_log(path: Path) -> logging.Handler:
    """Append this run's outcomes to ``path``, one JSON object per line after a timestamp."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.info(json.dumps({"run_started": datetime.now(UTC).isoformat()}))
    return handler

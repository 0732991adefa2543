"""A rig that SIGKILLs gateways while clients retry with ``Idempotency-Key``, and counts what
reached the ledger. Used by ``tests/e2e/test_crash_billing.py`` and ``bench/crash.py``.

Three ``asrgw gateway`` processes (``gateways_count``) share one PostgreSQL ledger and one
Redis; a node stand-in (``tests.fixtures.standin_node``) answers each transcription after
50-600 ms with a transcript that is a function of the audio. ``clients`` concurrent clients send
``requests`` different one-second recordings, each under its own key, to any gateway, retrying
the same key on
connection errors, 5xx and 409 until it succeeds; meanwhile a gateway is SIGKILLed every 2-3 s,
in turn, and started again (one is always left up).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import subprocess
import sys
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import text

from billing.db import Database
from tests.fixtures.processes import ASRGW, ROOT, Restartable, free_port, running_command
from tests.fixtures.standin_node import expected_transcript

SECONDS_OF_AUDIO = 1
MAX_TRIES = 60
LONGEST_PAUSE_SECONDS = 2.0


def recording(index: int) -> bytes:
    """One second of 16 kHz 16-bit noise, different for every index."""
    frames = random.Random(index).randbytes(16_000 * 2 * SECONDS_OF_AUDIO)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(frames)
    return buffer.getvalue()


@dataclass
class Answer:
    """What one logical request's client finally got."""

    key: str
    expected_text: str
    status: int = 0
    text: str = ""
    billing_request_id: str = ""
    cost_micros: int = 0
    tries: int = 0


@dataclass
class CrashRun:
    requests: int
    kills: int
    seconds: float
    answers: list[Answer]
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def succeeded(self) -> int:
        return sum(1 for answer in self.answers if answer.status == 200)


async def _client(
    queue: asyncio.Queue[int],
    urls: list[str],
    api_key: str,
    answers: list[Answer],
    statuses: Counter[str],
    seed: int,
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(timeout=60) as http:
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            audio = recording(index)
            answer = answers[index]
            pause = 0.05
            gateway = rng.randrange(len(urls))
            for _ in range(MAX_TRIES):
                answer.tries += 1
                try:
                    response = await http.post(
                        f"{urls[gateway]}/v1/audio/transcriptions",
                        headers={
                            "Authorization": f"Bearer {api_key}",
                            "Idempotency-Key": answer.key,
                        },
                        files={"file": ("speech.wav", audio, "audio/wav")},
                        data={"model": "whisper-1"},
                    )
                except httpx.TransportError as error:
                    # That gateway is down (or died mid-request): the next one, at once; a
                    # pause only once every gateway has been tried.
                    statuses[type(error).__name__] += 1
                    gateway = (gateway + 1) % len(urls)
                    if answer.tries % len(urls) == 0:
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
                    continue
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    answer.status = 200
                    answer.text = response.json()["text"]
                    answer.billing_request_id = response.headers["x-billing-request-id"]
                    answer.cost_micros = int(response.headers["x-billing-cost-micros"])
                    break
                if response.status_code in (409, 500, 502, 503, 504):
                    retry_after = float(response.headers.get("retry-after", pause))
                    await asyncio.sleep(min(retry_after, LONGEST_PAUSE_SECONDS))
                    continue
                answer.status = response.status_code
                answer.text = response.text
                break


async def _killer(gateways: list[Restartable], stop: asyncio.Event, seed: int) -> None:
    """Every 2-3 s, SIGKILL a gateway and start it again, taking turns; a gateway is killed
    only while another one is up, so clients always have somewhere to retry. A restart takes
    seconds (imports, then the application's start), so several gateways take turns."""
    rng = random.Random(seed)
    restarting: dict[int, asyncio.Task[None]] = {}
    turn = 0
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), rng.uniform(2.0, 3.0))
                return
            except TimeoutError:
                pass
            for index, task in list(restarting.items()):
                if task.done():
                    await restarting.pop(index)
            up = [index for index in range(len(gateways)) if index not in restarting]
            if len(up) < 2:
                # Wait for one to come back: the last one standing is never killed.
                await asyncio.wait(restarting.values(), return_when=asyncio.FIRST_COMPLETED)
                continue
            victim = min(up, key=lambda index: (index - turn) % len(gateways))
            turn = victim + 1
            await asyncio.to_thread(gateways[victim].kill)
            restarting[victim] = asyncio.create_task(asyncio.to_thread(gateways[victim].start))
    finally:
        for task in restarting.values():
            await task


async def _drive(
    gateways: list[Restartable], urls: list[str], api_key: str, requests: int, clients: int
) -> tuple[list[Answer], Counter[str]]:
    answers = [
        Answer(f"crash-{index}", expected_transcript(recording(index))) for index in range(requests)
    ]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    statuses: Counter[str] = Counter()
    stop = asyncio.Event()
    killer = asyncio.create_task(_killer(gateways, stop, seed=requests))
    try:
        await asyncio.gather(
            *(_client(queue, urls, api_key, answers, statuses, seed) for seed in range(clients))
        )
    finally:
        stop.set()
        await killer
    return answers, statuses


def gateway_environment(
    database_url: str, node_url: str, redis_url: str, prefix: str
) -> dict[str, str]:
    return {
        "BILLING_DATABASE_URL": database_url,
        "GATEWAY_NODES": node_url,
        "GATEWAY_DEFAULT_MODEL": "standin-en",
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_RATE_LIMIT_KEY_PREFIX": prefix,
        "GATEWAY_CACHE_ENABLED": "false",
        "GATEWAY_JOB_WORKERS": "0",
        "GATEWAY_MIGRATE_ON_START": "false",
        # Short leases and sweeps, so a killed gateway's keys and holds come back within
        # seconds instead of the production half minute.
        "GATEWAY_REQUEST_LEASE_SECONDS": "2",
        "GATEWAY_RESERVATION_SWEEP_SECONDS": "1",
        "GATEWAY_IDEMPOTENCY_WAIT_SECONDS": "3",
        "GATEWAY_NODE_HEALTH_INTERVAL_SECONDS": "1",
    }


def run_crashes(
    database_url: str,
    redis_url: str,
    prefix: str,
    api_key: str,
    log_dir: Path,
    *,
    requests: int,
    clients: int = 12,
    gateways_count: int = 3,
) -> CrashRun:
    """Run the rig; gateways and the node are stopped when it returns."""
    node_port = free_port()
    node_url = f"http://127.0.0.1:{node_port}"
    node_command = [
        sys.executable, "-m", "uvicorn", "tests.fixtures.standin_node:app",
        "--port", str(node_port), "--no-access-log",
    ]  # fmt: skip
    environment = gateway_environment(database_url, node_url, redis_url, prefix)
    ports = [free_port() for _ in range(gateways_count)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    gateways = [
        Restartable(
            [*ASRGW, "gateway", "--port", str(port)],
            environment,
            f"{url}/health/ready",
            log_dir / f"gateway-{index}.log",
        )
        for index, (port, url) in enumerate(zip(ports, urls, strict=True))
    ]
    with running_command(node_command, {}, f"{node_url}/health/ready", log_dir / "node.log"):
        with contextlib.ExitStack() as stack:
            for gateway in gateways:
                stack.enter_context(gateway)
            started = time.monotonic()
            answers, statuses = asyncio.run(_drive(gateways, urls, api_key, requests, clients))
            seconds = time.monotonic() - started
            _wait_for_sweeps(Database(database_url))
    return CrashRun(requests, sum(g.kills for g in gateways), seconds, answers, statuses)


def _wait_for_sweeps(database: Database, timeout: float = 60.0) -> None:
    """Until the live gateways' sweepers have released what killed ones held (a condition
    awaited, not a timing asserted: the test checks the ledger afterwards either way)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with database.transaction() as session:
                open_holds = session.execute(
                    text("SELECT count(*) FROM reservations WHERE state = 'open'")
                ).scalar_one()
            if open_holds == 0:
                return
            time.sleep(0.5)
    finally:
        database.dispose()


def reconcile(database_url: str, period: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ASRGW, "admin", "reconcile", "--period", period],
        env={**os.environ, "BILLING_DATABASE_URL": database_url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

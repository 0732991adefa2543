"""Gateway overhead: what the gateway adds in front of an upstream that answers at once.

Side by side in one run, with 100 KB and 1 MB wav uploads:

- direct: the upstream (``bench/instant_node.py``) called directly, in the node's wire format;
- bare: a FastAPI endpoint that only reads the same multipart upload (``bench/bare_upload.py``),
  the floor for any Python gateway;
- gateway miss: ``asrgw gateway`` with the result cache off: auth, rate limits (the plan allows
  far more than is sent), MD5, probe, reservation, dispatch, settlement and ledger row;
- gateway hit: the same with the cache on and the same audio every time (a hit holds
  nothing: it is checked and written to the ledger in one statement, at the plan's cache-hit
  price);
- LiteLLM: the LiteLLM proxy (master key, no database) in front of the same stand-in, which
  also answers OpenAI's ``/v1/audio/transcriptions``, when a ``litellm`` executable is given
  (``--litellm``, default ``.cache/litellm-venv/bin/litellm``: ``python -m venv
  .cache/litellm-venv && .cache/litellm-venv/bin/pip install 'litellm[proxy]'``; it is no
  dependency of this project).

For each: sequential p50/p95 latency from one Python client (``--requests`` in a row, one
connection), and requests/s under ``wrk`` (``--connections`` connections, ``--seconds`` long; a
Python client on a small machine would be the bottleneck). The ledger is a SQLite file, or
PostgreSQL with ``--database-url`` (in a schema of its own, dropped afterwards). Prints a table
and appends it to docs/benchmarks.md.

    python bench/gateway.py
    python bench/gateway.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench
    python bench/gateway.py --workers 2 --redis-url redis://127.0.0.1:6379/0 --no-write

Then, unless ``--engine-requests 0``, the same gateway (cache on) in front of a real ``asrgw node``
serving its default Whisper tiny.en on the CPU, with a recorded LibriVox utterance
(bench/speech_data.py): ``--engine-requests`` misses in a row (each upload a little longer
than the last, so its MD5 is new and the node transcribes it), then as many hits of one of
them. What a hit saves is the node's work, which the instant stand-in above does not have; this
pair measures "a hit costs at most half a miss" against a node that really transcribes.

Needs ``wrk`` (``apt-get update && apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.record import record  # noqa: E402
from bench.speech_data import english_utterances, pcm16_wav  # noqa: E402
from billing.db import Database  # noqa: E402
from billing.limits import MAX_REQUESTS_PER_MINUTE  # noqa: E402
from billing.migrate import upgrade_to_head  # noqa: E402
from tests.fixtures.factories import create_tenant_with_key  # noqa: E402
from tests.fixtures.processes import ASRGW, free_port, wait_until_ready  # noqa: E402

SIZES = {"100 KB": 100_000, "1 MB": 1_000_000}
DEFAULT_LITELLM = ROOT / ".cache" / "litellm-venv" / "bin" / "litellm"
SAMPLE_RATE = 16_000
BOUNDARY = "asrgw-bench-boundary"
NODE_SECRET = "bench-node-secret"
# Targets: a 100 KB miss at 3x LiteLLM's requests/s in the same run, with at most 3 ms added to
# the sequential p50 over calling the upstream directly; a hit at 25 % of the bare endpoint.
TARGET_ADDED_P50_MS = 3.0
TARGET_MISS_TIMES_LITELLM = 3
TARGET_HIT_SHARE_OF_BARE = 0.25
TARGET_HIT_SHARE_OF_MISS = 0.5
TARGETS = ("direct", "bare", "LiteLLM", "gateway miss", "gateway hit")
LITELLM_MASTER_KEY = "sk-bench-litellm-master"
LITELLM_CONFIG = """
model_list:
  - model_name: whisper-1
    model_info:
      mode: audio_transcription
    litellm_params:
      model: openai/whisper-1
      api_base: {upstream}/v1
      api_key: sk-upstream-not-checked
general_settings:
  master_key: {master_key}
litellm_settings:
  drop_params: true
"""


@dataclass
class Target:
    name: str
    url: str
    content_type: str
    headers: dict[str, str]
    bodies: dict[str, Path]  # size label → prebuilt request body
    expect_cache: str | None = None
    pid: int | None = None  # the serving process, whose CPU time is measured


@dataclass
class Measurement:
    target: str
    size: str
    p50_ms: float
    p95_ms: float
    requests_per_second: float
    wrk_p50_ms: float
    errors: int
    cpu_ms_per_request: float = float("nan")


@dataclass
class EngineMeasurement:
    """Sequential requests through the gateway to a node that really transcribes."""

    name: str  # "miss" or "hit"
    requests: int
    p50_ms: float
    p95_ms: float
    gateway_cpu_ms: float  # the gateway process's CPU per request
    node_cpu_ms: float  # the node's
    text: str  # what the last answer said


def noise_wav(size_bytes: int, seed: int) -> bytes:
    """A real 16 kHz mono PCM wav of about ``size_bytes``: quiet noise."""
    frames = (size_bytes - 44) // 2
    generator = random.Random(seed)
    pcm = bytes(byte & 0x0F for byte in generator.randbytes(frames * 2))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(pcm)
    return buffer.getvalue()


def multipart(fields: dict[str, str], audio: bytes) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="audio.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode()
        + audio
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return b"".join(parts)


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        sys.exit(
            "wrk is not installed; it drives the concurrent runs. Install it with:\n"
            "    apt-get update && apt-get install -y wrk      (Debian/Ubuntu)\n"
            "    brew install wrk                              (macOS)"
        )
    return found


@contextmanager
def serving(
    command: list[str],
    env: dict[str, str],
    ready_url: str,
    log: Path,
    *,
    without: tuple[str, ...] = (),
) -> Iterator[int]:
    """``command`` running until the block ends; ``without`` names variables not passed on."""
    environment = {k: v for k, v in os.environ.items() if k not in without}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env={**environment, **env}, cwd=ROOT, stdout=output, stderr=output
        )
        try:
            try:
                wait_until_ready(ready_url, process)
            except (RuntimeError, TimeoutError):
                output.flush()
                sys.stderr.write(log.read_text(errors="replace")[-4000:])
                raise
            yield process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def uvicorn_command(app: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", f"--port={port}", *extra]


@contextmanager
def ledger(database_url: str | None, workdir: Path) -> Iterator[str]:
    """A fresh ledger: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if database_url is None:
        yield f"sqlite:///{workdir / 'ledger.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(database_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def timed_post(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: dict[str, str],
    label: str,
    expect_cache: str | None,
) -> tuple[float, httpx.Response]:
    """One request: its milliseconds and its answer. Anything but a 200 (with ``x-cache``
    ``expect_cache``, when given) ends the run."""
    started = time.perf_counter()
    response = client.post(url, content=body, headers=headers)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        sys.exit(f"{label}: HTTP {response.status_code}: {response.text}")
    cache = response.headers.get("x-cache")
    if expect_cache is not None and cache != expect_cache:
        sys.exit(f"{label}: x-cache {cache}, expected {expect_cache}")
    return elapsed, response


def p50_p95(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49], cuts[94]


def sequential(target: Target, size: str, requests: int) -> tuple[float, float]:
    body = target.bodies[size].read_bytes()
    headers = {**target.headers, "Content-Type": target.content_type}
    latencies = []
    with httpx.Client(timeout=30) as client:
        for index in range(requests + requests // 10):
            expect_cache = target.expect_cache if index > 0 else None
            elapsed, _ = timed_post(
                client, target.url, body, headers, f"{target.name} {size}", expect_cache
            )
            if index >= requests // 10:  # the first tenth warms up
                latencies.append(elapsed)
    return p50_p95(latencies)


WRK_SCRIPT = """
local file = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "{content_type}"
{headers}
"""


def cpu_seconds(pid: int) -> float:
    """User and system CPU of ``pid`` and its children (uvicorn workers), from /proc."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def concurrent(
    wrk: str, target: Target, size: str, options: argparse.Namespace, workdir: Path
) -> tuple[float, float, int, float]:
    """wrk's requests/s, its p50 in ms, how many answers were not 2xx or failed, and the
    serving process's CPU milliseconds per request (a measure the machine's load bends little:
    CPU time, not waiting)."""
    script = workdir / f"{target.name.replace(' ', '-')}-{size.replace(' ', '')}.lua"
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items())
    script.write_text(
        WRK_SCRIPT.format(
            body=target.bodies[size], content_type=target.content_type, headers=header_lines
        )
    )
    command = [
        wrk,
        f"-t{options.threads}",
        f"-c{options.connections}",
        f"-d{options.seconds}s",
        "--latency",
        "-s",
        str(script),
        target.url,
    ]
    cpu_before = cpu_seconds(target.pid) if target.pid else float("nan")
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu_used = (cpu_seconds(target.pid) - cpu_before) if target.pid else float("nan")
    requests_done = re.search(r"(\d+) requests in", output)
    cpu_ms = cpu_used * 1000 / int(requests_done.group(1)) if requests_done else float("nan")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+([\d.]+)(us|ms|s)\b", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    wrk_p50 = float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan")
    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(found.group(1))
    if found := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(part) for part in found.groups())
    if errors:
        print(f"{target.name} {size}: wrk saw errors:\n{output}", flush=True)
    return rate, wrk_p50, errors, cpu_ms


def measure(
    wrk: str, target: Target, options: argparse.Namespace, workdir: Path
) -> list[Measurement]:
    results = []
    for size in SIZES:
        requests = options.requests if size == "100 KB" else max(20, options.requests // 2)
        p50, p95 = sequential(target, size, requests)
        rate, wrk_p50, errors, cpu_ms = concurrent(wrk, target, size, options, workdir)
        results.append(Measurement(target.name, size, p50, p95, rate, wrk_p50, errors, cpu_ms))
        print(
            f"{target.name:>13} {size:>6}: p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  "
            f"{rate:8.1f} req/s  (wrk p50 {wrk_p50:.1f} ms, errors {errors}, "
            f"server CPU {cpu_ms:.2f} ms/request)",
            flush=True,
        )
    return results


def gateway_command(options: argparse.Namespace, port: int) -> list[str]:
    command = [*ASRGW, "--log-level", "warning", "gateway", "--port", str(port)]
    if options.workers > 1:
        command += ["--workers", str(options.workers)]
    return command


def run(options: argparse.Namespace) -> tuple[list[Measurement], list[EngineMeasurement]]:
    wrk = require_wrk()
    results: list[Measurement] = []
    engine: list[EngineMeasurement] = []
    with tempfile.TemporaryDirectory(prefix="asrgw-bench-") as tmp:
        workdir = Path(tmp)
        audio = {size: noise_wav(n, seed=n) for size, n in SIZES.items()}
        node_form = {"language": "auto", "word_timestamps": "false", "itn": "true"}
        openai_form = {"model": "whisper-1"}
        node_bodies, openai_bodies = {}, {}
        for size, wav in audio.items():
            label = size.replace(" ", "")
            node_bodies[size] = workdir / f"node-{label}.body"
            node_bodies[size].write_bytes(multipart(node_form, wav))
            openai_bodies[size] = workdir / f"openai-{label}.body"
            openai_bodies[size].write_bytes(multipart(openai_form, wav))
        content_type = f"multipart/form-data; boundary={BOUNDARY}"

        node_port, bare_port, gateway_port = free_port(), free_port(), free_port()
        node_url = f"http://127.0.0.1:{node_port}"
        bare_url = f"http://127.0.0.1:{bare_port}"
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        quiet = ["--log-level", "warning"]
        with (
            serving(
                uvicorn_command("bench.instant_node:app", node_port, *quiet, "--no-access-log"),
                {},
                f"{node_url}/health/ready",
                workdir / "node.log",
            ) as node_pid,
            ledger(options.database_url, workdir) as database_url,
        ):
            direct = Target(
                "direct",
                f"{node_url}/v1/transcribe",
                content_type,
                {"Authorization": f"Bearer {NODE_SECRET}"},
                node_bodies,
                pid=node_pid,
            )
            results += measure(wrk, direct, options, workdir)

            with serving(
                # Served as `asrgw gateway` serves the gateway: uvicorn's defaults, access log on.
                uvicorn_command("bench.bare_upload:app", bare_port),
                {},
                f"{bare_url}/health/live",
                workdir / "bare.log",
            ) as bare_pid:
                bare = Target(
                    "bare",
                    f"{bare_url}/v1/audio/transcriptions",
                    content_type,
                    {},
                    openai_bodies,
                    pid=bare_pid,
                )
                results += measure(wrk, bare, options, workdir)

            if options.litellm is not None:
                results += measure_litellm(wrk, options, workdir, node_url, openai_bodies)

            upgrade_to_head(database_url)
            database = Database(database_url)
            key = create_tenant_with_key(
                database,
                "bench",
                requests_per_minute=MAX_REQUESTS_PER_MINUTE,
                concurrency_limit=10_000,
            )
            database.dispose()
            environment = {
                "BILLING_DATABASE_URL": database_url,
                "GATEWAY_NODES": node_url,
                "GATEWAY_NODE_SECRET": NODE_SECRET,
                "GATEWAY_MIGRATE_ON_START": "false",
            }
            if options.redis_url:
                environment["GATEWAY_REDIS_URL"] = options.redis_url
                environment["GATEWAY_RATE_LIMIT_KEY_PREFIX"] = f"bench-{uuid.uuid4().hex[:8]}"
            auth = {"Authorization": f"Bearer {key}"}
            for name, cache_on in (("gateway miss", False), ("gateway hit", True)):
                with serving(
                    gateway_command(options, gateway_port),
                    {**environment, "GATEWAY_CACHE_ENABLED": str(cache_on).lower()},
                    f"{gateway_url}/health/ready",
                    workdir / f"{name.replace(' ', '-')}.log",
                ) as gateway_pid:
                    target = Target(
                        name,
                        f"{gateway_url}/v1/audio/transcriptions",
                        content_type,
                        auth,
                        openai_bodies,
                        expect_cache="hit" if cache_on else "miss",
                        pid=gateway_pid,
                    )
                    results += measure(wrk, target, options, workdir)
            if options.engine_requests:
                engine = measure_real_engine(options, workdir, environment, auth, gateway_port)
    return results, engine


def engine_clips(count: int) -> list[bytes]:
    """``count`` uploads of one recorded utterance, each 10 ms of silence longer than the last:
    the same words, a different MD5 each."""
    utterance = next(u for u in english_utterances() if u.name.startswith("librivox/"))
    return [
        pcm16_wav(np.concatenate([utterance.audio, np.zeros(160 * (index + 1), np.float32)]))
        for index in range(count)
    ]


def measure_real_engine(
    options: argparse.Namespace,
    workdir: Path,
    environment: dict[str, str],
    auth: dict[str, str],
    gateway_port: int,
) -> list[EngineMeasurement]:
    """Misses and hits through the gateway to ``asrgw node`` serving Whisper tiny.en on the CPU."""
    node_port = free_port()
    node_url = f"http://127.0.0.1:{node_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    bodies = [
        multipart({"model": "whisper-1"}, clip) for clip in engine_clips(options.engine_requests)
    ]
    headers = {**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    results = []
    with (
        serving(
            [*ASRGW, "--log-level", "warning", "node", "--port", str(node_port)],
            {"INFERENCE_NODE_SECRET": NODE_SECRET, "INFERENCE_DEVICE": "cpu"},
            f"{node_url}/health/ready",
            workdir / "engine-node.log",
        ) as node_pid,
        serving(
            gateway_command(options, gateway_port),
            {**environment, "GATEWAY_NODES": node_url, "GATEWAY_CACHE_ENABLED": "true"},
            f"{gateway_url}/health/ready",
            workdir / "engine-gateway.log",
        ) as gateway_pid,
        httpx.Client(timeout=120) as client,
    ):
        for name, sent in (("miss", bodies), ("hit", [bodies[0]] * len(bodies))):
            gateway_before, node_before = cpu_seconds(gateway_pid), cpu_seconds(node_pid)
            latencies, text = [], ""
            for body in sent:
                elapsed, response = timed_post(
                    client,
                    f"{gateway_url}/v1/audio/transcriptions",
                    body,
                    headers,
                    "real engine",
                    expect_cache=name,
                )
                latencies.append(elapsed)
                text = response.json()["text"]
            gateway_used = cpu_seconds(gateway_pid) - gateway_before
            node_used = cpu_seconds(node_pid) - node_before
            one = EngineMeasurement(
                name,
                len(sent),
                *p50_p95(latencies),
                gateway_used * 1000 / len(sent),
                node_used * 1000 / len(sent),
                text,
            )
            results.append(one)
            print(
                f"  real engine {name:>4}: p50 {one.p50_ms:8.2f} ms  p95 {one.p95_ms:8.2f} ms  "
                f"CPU gateway {one.gateway_cpu_ms:.2f} + node {one.node_cpu_ms:.2f} ms/request",
                flush=True,
            )
    return results


def measure_litellm(
    wrk: str,
    options: argparse.Namespace,
    workdir: Path,
    upstream: str,
    bodies: dict[str, Path],
) -> list[Measurement]:
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(upstream=upstream, master_key=LITELLM_MASTER_KEY))
    command = [
        str(options.litellm), "--config", str(config), "--host", "127.0.0.1",
        "--port", str(port), "--num_workers", "1",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    # No DATABASE_URL: LiteLLM would take it for its own (Prisma) database; it runs without one.
    with serving(
        command,
        {"LITELLM_LOG": "ERROR"},
        f"{url}/health/liveliness",
        workdir / "litellm.log",
        without=("DATABASE_URL",),
    ) as pid:
        target = Target(
            "LiteLLM",
            f"{url}/v1/audio/transcriptions",
            f"multipart/form-data; boundary={BOUNDARY}",
            {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
            bodies,
            pid=pid,
        )
        return measure(wrk, target, options, workdir)


def table(results: list[Measurement]) -> str:
    by = {(one.target, one.size): one for one in results}
    lines = [
        "| upload | target | seq p50 ms | seq p95 ms | p50 added over direct ms | req/s "
        "(wrk) | wrk p50 ms | errors | server CPU ms/request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        direct = by[("direct", size)]
        for name in TARGETS:
            if (name, size) not in by:
                continue
            one = by[(name, size)]
            added = "" if name == "direct" else f"{one.p50_ms - direct.p50_ms:+.2f}"
            lines.append(
                f"| {size} | {name} | {one.p50_ms:.2f} | {one.p95_ms:.2f} | {added} | "
                f"{one.requests_per_second:,.0f} | {one.wrk_p50_ms:.1f} | {one.errors} | "
                f"{one.cpu_ms_per_request:.2f} |"
            )
    return "\n".join(lines)


def verdicts(results: list[Measurement]) -> str:
    by = {(one.target, one.size): one for one in results}
    lines = []

    def verdict(met: bool) -> str:
        return "met" if met else "**not met**"

    for size in SIZES:
        direct, bare = by[("direct", size)], by[("bare", size)]
        miss, hit = by[("gateway miss", size)], by[("gateway hit", size)]
        added = miss.p50_ms - direct.p50_ms
        hit_needed = TARGET_HIT_SHARE_OF_BARE * bare.requests_per_second
        lines.append(
            f"- {size}: added p50 on a miss {added:+.2f} ms (target ≤ {TARGET_ADDED_P50_MS:g} ms): "
            f"{verdict(added <= TARGET_ADDED_P50_MS)}."
        )
        litellm = by.get(("LiteLLM", size))
        if litellm is not None:
            ratio = miss.requests_per_second / litellm.requests_per_second
            lines.append(
                f"- {size}: misses {miss.requests_per_second:,.0f} req/s = {ratio:.1f}× "
                f"LiteLLM's {litellm.requests_per_second:,.0f} in this run (target ≥ "
                f"{TARGET_MISS_TIMES_LITELLM}×): {verdict(ratio >= TARGET_MISS_TIMES_LITELLM)}."
            )
        lines.append(
            f"- {size}: hits {hit.requests_per_second:,.0f} req/s = "
            f"{hit.requests_per_second / bare.requests_per_second:.0%} of bare "
            f"{bare.requests_per_second:,.0f} (target ≥ {TARGET_HIT_SHARE_OF_BARE:.0%}): "
            f"{verdict(hit.requests_per_second >= hit_needed)}."
        )
        cost = miss.requests_per_second / hit.requests_per_second
        lines.append(
            f"- {size}: a hit takes {cost:.2f}× a miss's time under load (target ≤ 0.5): "
            f"{verdict(cost <= 0.5)}."
        )
    return "\n".join(lines)


def engine_table(engine: list[EngineMeasurement]) -> str:
    lines = [
        "| request | count | seq p50 ms | seq p95 ms | gateway CPU ms/request | node CPU "
        "ms/request |",
        "|---|---|---|---|---|---|",
    ]
    for one in engine:
        lines.append(
            f"| {one.name} | {one.requests} | {one.p50_ms:.2f} | {one.p95_ms:.2f} | "
            f"{one.gateway_cpu_ms:.2f} | {one.node_cpu_ms:.2f} |"
        )
    return "\n".join(lines)


def engine_verdicts(engine: list[EngineMeasurement]) -> str:
    miss, hit = engine
    share = hit.p50_ms / miss.p50_ms
    cpu_share = (hit.gateway_cpu_ms + hit.node_cpu_ms) / (miss.gateway_cpu_ms + miss.node_cpu_ms)
    met = "met" if share <= TARGET_HIT_SHARE_OF_MISS else "**not met**"
    return (
        f"- With a node that transcribes, a hit takes {share:.3f}× a miss's time (p50 "
        f"{hit.p50_ms:.2f} against {miss.p50_ms:.2f} ms; target ≤ {TARGET_HIT_SHARE_OF_MISS:g}): "
        f"{met}. Gateway and node CPU per hit: {cpu_share:.3f}× a miss's.\n"
        f'- What both answered: "{miss.text.strip()}"'
    )


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def report(
    results: list[Measurement],
    engine: list[EngineMeasurement],
    options: argparse.Namespace,
    command: str,
    load: str,
) -> str:
    database = "PostgreSQL" if options.database_url else "SQLite file"
    workers = f", {options.workers} gateway workers" if options.workers > 1 else ""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    engine_part = ""
    if engine:
        engine_part = (
            f"\nThe same gateway, cache on, in front of `asrgw node` serving Whisper tiny.en on "
            f"the CPU (int8), with one recorded LibriVox utterance "
            f"({engine[0].requests} misses, each upload 10 ms of silence longer than the last, "
            f"then {engine[1].requests} hits of the first), one Python client in sequence:\n\n"
            f"{engine_table(engine)}\n\n{engine_verdicts(engine)}\n"
        )
    return (
        f"\n### Gateway overhead, {database} ledger{workers}, {now}\n\n"
        f"Machine: {machine()}; wrk, the servers and the ledger share it (1-minute load "
        f"average before and after the run: {load}). "
        f"Command: `{command}`. Sequential: one Python client, {options.requests} requests "
        f"(100 KB) and {max(20, options.requests // 2)} (1 MB) in a row after a tenth as warm-up; "
        f"concurrent: `wrk -t{options.threads} -c{options.connections} -d{options.seconds}s`.\n\n"
        f"{table(results)}\n\n"
        f"{verdicts(results)}\n"
        f"{engine_part}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="sequential requests (100 KB)")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--database-url", help="PostgreSQL ledger (default: a SQLite file)")
    parser.add_argument("--workers", type=int, default=1, help="gateway uvicorn workers")
    parser.add_argument("--redis-url", help="GATEWAY_REDIS_URL for the gateway")
    parser.add_argument(
        "--litellm",
        type=Path,
        default=DEFAULT_LITELLM if DEFAULT_LITELLM.exists() else None,
        help="a `litellm` executable (litellm[proxy], in a venv of its own) to measure beside "
        f"the gateway [default: {DEFAULT_LITELLM.relative_to(ROOT)} if it exists]",
    )
    parser.add_argument(
        "--engine-requests",
        type=int,
        default=20,
        help="misses, then hits, through the gateway to a real Whisper tiny.en node on the CPU; "
        "0 skips the real engine [default: 20]",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    options = parser.parse_args()
    command = "python bench/gateway.py " + " ".join(sys.argv[1:])
    load_before = os.getloadavg()[0]
    results, engine = run(options)
    load = f"{load_before:.1f} and {os.getloadavg()[0]:.1f}"
    text_report = report(results, engine, options, command.strip(), load)
    print(text_report)
    if not options.no_write:
        record(options.out, "Gateway overhead", text_report)


if __name__ == "__main__":
    main()

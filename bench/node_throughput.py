"""Node throughput: one-at-a-time versus micro-batched, for the Paraformer and Whisper engines.

Paraformer: a random-weight model built with FunASR's own classes (``--shape large`` is the
paraformer-large shape: SANM encoder 50 x 512, decoder 16 blocks, vocab 8404; random weights
cost the same FLOPs as trained ones), driven with 5-20 s speech-like clips.

Whisper: ``--shape tiny.en`` is the embedded whisper-tiny.en (real weights), driven with real
recorded speech (bench/speech_data.py); ``--shape large-v3`` (or ``tiny``) is a random-weight
Whisper of that shape built offline with transformers' ``WhisperConfig`` and converted with
CTranslate2's ``TransformersConverter`` (needs the funasr and bench extras: torch, transformers),
so a GPU host needs no download. A random decoder rarely emits its end token, so the node caps
each window at ``--max-new-tokens`` (default 64 for random weights, through
INFERENCE_WHISPER_MAX_NEW_TOKENS): real speech of 1-7 s decodes to about 5-25 tokens, so the
decoder's share of the work is still overstated.

Each mode starts a real node process and drives it with N concurrent closed-loop clients, then
prints a table (×realtime, p50/p95 latency, engine calls, peak RSS and GPU memory) and appends
it, with the device, to docs/benchmarks.md.

    python bench/node_throughput.py                                   # large Paraformer
    python bench/node_throughput.py --engine whisper --shape tiny.en  # embedded Whisper, CPU
    python bench/node_throughput.py --engine whisper --shape large-v3 --device cuda:0 \
        --clients 1,8,32,64                                           # GPU
    python bench/node_throughput.py --device cuda:0 --clients 1,8,32,64
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import record  # noqa: E402
from inference.modelgen import build_random_paraformer, build_random_whisper  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from speech_data import english_utterances, pcm16_wav  # noqa: E402

logging.getLogger("httpx").setLevel(logging.WARNING)
from tests.fixtures.nodes import metric  # noqa: E402
from tests.fixtures.processes import free_port, wait_until_ready  # noqa: E402

SAMPLE_RATE = 16_000
MODEL_ID = "bench-model"
MODES = {
    # max_batch 1: the engine sees one item at a time, exactly what a model lock gives.
    "one-at-a-time": {"INFERENCE_MAX_BATCH": "1"},
    "micro-batched": {"INFERENCE_MAX_BATCH": "32", "INFERENCE_MAX_WAIT_MS": "5"},
}


@dataclass
class RunResult:
    mode: str
    clients: int
    requests: int
    audio_seconds: float
    wall_seconds: float
    latencies: list[float]
    engine_calls: float
    peak_rss_bytes: int
    gpu_peak_bytes: int | None

    @property
    def realtime(self) -> float:
        return self.audio_seconds / self.wall_seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def speechlike_clip(seconds: float, seed: int) -> bytes:
    """Syllable-rate modulated noise with pauses: the model is random, only shape and length
    matter, and this needs no speech synthesizer on the benchmark host."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * SAMPLE_RATE)
    t = np.arange(samples) / SAMPLE_RATE
    envelope = np.clip(np.sin(2 * np.pi * 3.5 * t + rng.uniform(0, 6)), 0, None)
    envelope *= (np.sin(2 * np.pi * 0.3 * t) > -0.6).astype(np.float32)
    signal = rng.standard_normal(samples) * envelope * 0.2
    return pcm16_wav(signal)


def clips(count: int) -> list[tuple[bytes, float]]:
    lengths = np.linspace(5, 20, count)
    return [
        (speechlike_clip(float(length), seed), float(length)) for seed, length in enumerate(lengths)
    ]


def gpu_memory_of(pid: int) -> int | None:
    """Bytes the process holds on the GPU as nvidia-smi sees it (CTranslate2 allocates outside
    torch, so the node's torch-based report has nothing for Whisper)."""
    try:
        listing = subprocess.run(
            [
                "nvidia-smi",
                "--query-compute-apps=pid,used_memory",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listing.splitlines():
        owner, _, used = line.partition(",")
        if owner.strip() == str(pid):
            return int(used.strip()) * 2**20
    return None


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def drive(
    url: str, clip_set: list[tuple[bytes, float]], clients: int, total: int
) -> tuple[float, float, list[float]]:
    """``clients`` closed-loop callers share ``total`` requests; returns audio s, wall s,
    latencies."""
    next_index = 0
    audio = 0.0
    latencies: list[float] = []

    async def caller(client: httpx.AsyncClient) -> None:
        nonlocal next_index, audio
        while next_index < total:
            data, seconds = clip_set[next_index % len(clip_set)]
            next_index += 1
            started = time.perf_counter()
            response = await client.post("/v1/transcribe", files={"file": ("clip.wav", data)})
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
            audio += seconds

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(caller(client) for _ in range(clients)))
        wall = time.perf_counter() - started
    return audio, wall, latencies


def run_mode(
    mode: str,
    model_spec: str,
    device: str,
    clip_set: list[tuple[bytes, float]],
    client_counts: list[int],
    requests_per_client: int,
    log_dir: Path,
    node_environment: dict[str, str],
) -> list[RunResult]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    model_id = model_spec.split("=")[0]
    environment = {
        **os.environ,
        "INFERENCE_MODELS": model_spec,
        "INFERENCE_DEVICE": device,
        "INFERENCE_MAX_QUEUE": "256",
        **node_environment,
        **MODES[mode],
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"node-{mode}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "node", "--port", str(port)],
            env=environment,
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        try:
            wait_until_ready(f"{url}/health/ready", process, timeout=1800)
            asyncio.run(drive(url, clip_set[:2], 1, 2))  # first-request effects stay out
            results = []
            for clients in client_counts:
                calls_before = metric(url, "asrnode_engine_calls_total", model=model_id)
                audio, wall, latencies = asyncio.run(
                    drive(
                        url,
                        clip_set,
                        clients,
                        clients * requests_per_client
                        if clients > 1
                        else max(requests_per_client, 4),
                    )
                )
                ready = httpx.get(f"{url}/health/ready", timeout=10).json()
                gpu = (ready.get("gpu_memory") or {}).get("peak_allocated_bytes")
                gpu = gpu or gpu_memory_of(process.pid)
                results.append(
                    RunResult(
                        mode=mode,
                        clients=clients,
                        requests=len(latencies),
                        audio_seconds=audio,
                        wall_seconds=wall,
                        latencies=latencies,
                        engine_calls=metric(url, "asrnode_engine_calls_total", model=model_id)
                        - calls_before,
                        peak_rss_bytes=peak_rss(process.pid),
                        gpu_peak_bytes=gpu,
                    )
                )
                print(
                    f"  {mode:>14}  N={clients:<3} {results[-1].realtime:8.1f}x realtime",
                    flush=True,
                )
            return results
        finally:
            process.terminate()
            process.wait(timeout=60)


def engine_ceiling(model_dir: Path, device: str) -> str:
    """What batching can gain at most on this device: equal-length clips (no padding), straight
    into the engine (no HTTP, no queue), batch of k versus k single calls."""
    from inference.engines.funasr_engine import FunASREngine
    from inference.protocol import TranscribeParams

    engine = FunASREngine("ceiling", str(model_dir), device=device)
    engine.load()
    rng = np.random.default_rng(1)
    params = TranscribeParams()

    def clip(seconds: int) -> np.ndarray:
        return (rng.standard_normal(seconds * SAMPLE_RATE) * 0.1).astype(np.float32)

    engine.transcribe_batch([clip(5), clip(5)], params)
    lines = [
        "| clip s | batch 1 ×realtime | batch 2 | batch 4 | batch 8 |",
        "|---|---|---|---|---|",
    ]
    for seconds in (5, 10, 20):
        speeds = []
        for size in (1, 2, 4, 8):
            batch = [clip(seconds) for _ in range(size)]
            started = time.perf_counter()
            engine.transcribe_batch(batch, params)
            speeds.append(size * seconds / (time.perf_counter() - started))
        cells = [f"{speeds[0]:.1f}"] + [f"{s:.1f} ({s / speeds[0]:.2f}×)" for s in speeds[1:]]
        lines.append(f"| {seconds} | " + " | ".join(cells) + " |")
    engine.close()
    return "\n".join(lines)


def speech_clips() -> list[tuple[bytes, float]]:
    """Real recorded English (1-7 s each) for a Whisper that really transcribes."""
    return [(utterance.wav_bytes(), utterance.seconds) for utterance in english_utterances()]


def describe_device(device: str) -> str:
    cpu = platform.processor() or "cpu"
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    parts = [f"{os.cpu_count()} x {cpu}"]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        parts.append(f"torch {torch.__version__}")
        if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
            parts.insert(0, torch.cuda.get_device_name(0))
    try:
        import ctranslate2

        parts.append(f"CTranslate2 {ctranslate2.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def table(results: list[RunResult]) -> str:
    lines = [
        "| mode | N | requests | audio s | wall s | ×realtime | speed-up | engine calls "
        "| p50 s | p95 s | peak RSS MiB | peak GPU MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    baseline = {r.clients: r.realtime for r in results if r.mode == "one-at-a-time"}
    for r in results:
        speedup = r.realtime / baseline[r.clients] if r.clients in baseline else float("nan")
        gpu = f"{r.gpu_peak_bytes / 2**20:.0f}" if r.gpu_peak_bytes else "-"
        lines.append(
            f"| {r.mode} | {r.clients} | {r.requests} | {r.audio_seconds:.0f} "
            f"| {r.wall_seconds:.1f} "
            f"| {r.realtime:.1f} | {speedup:.2f}× | {r.engine_calls:.0f} | {r.percentile(0.5):.2f} "
            f"| {r.percentile(0.95):.2f} | {r.peak_rss_bytes / 2**20:.0f} | {gpu} |"
        )
    return "\n".join(lines)


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["paraformer", "whisper"], default="paraformer")
    parser.add_argument(
        "--shape",
        default=None,
        help="paraformer: tiny or large (default); whisper: tiny.en (the embedded model, "
        "default), or a random-weight tiny or large-v3",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda:0 or auto")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated N values")
    parser.add_argument("--requests", type=int, default=2, help="requests per client (N > 1)")
    parser.add_argument("--clips", type=int, default=10, help="distinct Paraformer clips, 5-20 s")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="Whisper: tokens per window at most (default 64 for random weights, none for tiny.en)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    options = parser.parse_args()

    bench_dir = ROOT / "var" / "bench"
    ceiling = ""
    node_environment: dict[str, str] = {}
    if options.engine == "paraformer":
        shape = options.shape or "large"
        model_dir = options.model_dir or bench_dir / f"paraformer-{shape}"
        if not (model_dir / "model.pt").exists():
            print(f"building a random {shape} Paraformer in {model_dir} …", flush=True)
            build_random_paraformer(model_dir, shape)
        model_spec = f"{MODEL_ID}={model_dir}"
        clip_set = clips(options.clips)
        title, clip_note = f"{shape} Paraformer", "clips 5-20 s"
    else:
        shape = options.shape or "tiny.en"
        if shape == "tiny.en":
            model_spec = "whisper-tiny.en"
        else:
            model_dir = options.model_dir or bench_dir / f"whisper-{shape}-random"
            if not (model_dir / "model.bin").exists():
                print(f"building a random {shape} Whisper in {model_dir} …", flush=True)
                build_random_whisper(model_dir, shape)
            model_spec = f"{MODEL_ID}={model_dir}"
        clip_set = speech_clips()
        title = f"Whisper {shape}" + ("" if shape == "tiny.en" else " (random weights)")
        clip_note = "real recorded English, 1-7 s per request"
        cap = options.max_new_tokens
        if cap is None and shape != "tiny.en":
            cap = 64
        if cap:
            node_environment["INFERENCE_WHISPER_MAX_NEW_TOKENS"] = str(cap)
            clip_note += f", at most {cap} tokens decoded per window"
    client_counts = [int(value) for value in options.clients.split(",")]
    results: list[RunResult] = []
    for mode in MODES:
        results += run_mode(
            mode,
            model_spec,
            options.device,
            clip_set,
            client_counts,
            options.requests,
            bench_dir,
            node_environment,
        )
    device = describe_device(options.device)
    if options.engine == "paraformer":
        ceiling = engine_ceiling(
            model_dir, "cpu" if options.device == "auto" and not _has_cuda() else options.device
        )
        ceiling = (
            f"\nEngine alone, equal-length clips (the most batching can gain here):\n\n{ceiling}\n"
        )
    report = (
        f"### {title}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"Device: {device} (load average {os.getloadavg()[0]:.1f} at the end). Command: "
        f"`python bench/node_throughput.py {' '.join(sys.argv[1:])}`.\n\n"
        f"Through a real node, N closed-loop clients, {clip_note}:\n\n{table(results)}\n"
        f"{ceiling}"
    )
    print()
    print(report)
    if not options.no_write:
        section = "Whisper node throughput" if options.engine == "whisper" else "Node throughput"
        record(options.out, section, report)


if __name__ == "__main__":
    main()

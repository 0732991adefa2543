"""A decompression bomb sent straight to a node process: an hour of silence in 29 KB of FLAC,
230 MB as 16 kHz float32. The node decodes no more than its limit allows, and its peak memory
(the process's high-water mark, reset before each request) shows it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inference.audio import SAMPLE_RATE
from tests.conftest import NODE_SECRET
from tests.fixtures.environment import skip_or_fail
from tests.fixtures.hostile_media import flac_claiming
from tests.fixtures.processes import free_port, running

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {NODE_SECRET}"}
NODE_LIMIT_SECONDS = 60
MB = 1024 * 1024


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def reset_peak_kb(pid: int) -> int:
    """Reset the process's peak resident size to its current one, and return it (kB)."""
    try:
        # 5: reset the peak resident set size (VmHWM) to the current one.
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as error:
        skip_or_fail(f"cannot reset the peak memory of a process here: {error}")
    return status_kb(pid, "VmHWM")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A node process (PocketSphinx) that accepts at most 60 s of audio: its URL and pid."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {
        "INFERENCE_NODE_SECRET": NODE_SECRET,
        "INFERENCE_MODELS": "pocketsphinx-en",
        "INFERENCE_MAX_AUDIO_SECONDS": str(NODE_LIMIT_SECONDS),
    }
    log = tmp_path_factory.mktemp("bomb-node") / "node.log"
    with running(["node", "--port", str(port)], environment, f"{url}/health/ready", log) as process:
        yield url, process.pid


def peak_growth(
    pid: int, url: str, path: str, audio: bytes, form: dict[str, str]
) -> tuple[httpx.Response, int]:
    """The node's answer to one request, and how far its peak memory rose above where it was
    when the request was sent (bytes)."""
    before_kb = reset_peak_kb(pid)
    response = httpx.post(
        f"{url}{path}", headers=AUTH, files={"file": ("a.flac", audio)}, data=form, timeout=60
    )
    return response, (status_kb(pid, "VmHWM") - before_kb) * 1024


def test_a_bomb_takes_no_more_memory_than_the_limit_allows(
    node: tuple[str, int], silent_hour_flac: bytes, weather_wav: Path
) -> None:
    url, pid = node
    bomb = flac_claiming(silent_hour_flac, 1)  # and its header says one second
    whole_file = 3600 * SAMPLE_RATE * 4
    assert whole_file / len(bomb) >= 300
    # First use of the decoder, the resampler and the upload path, outside the measurements.
    warm = httpx.post(
        f"{url}/v1/transcribe",
        headers=AUTH,
        files={"file": ("w.wav", weather_wav.read_bytes())},
        timeout=60,
    )
    assert warm.status_code == 200

    # Straight to the node, no length declared: the node's own 60 s limit, checked while
    # decoding (60 s of float32 is 3.7 MB).
    response, growth = peak_growth(pid, url, "/v1/transcribe", bomb, {})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "audio_too_long"
    assert growth < 24 * MB < whole_file / 8

    # As the gateway would send a file it measured at one second: refused after about that.
    response, growth = peak_growth(pid, url, "/v1/transcribe", bomb, {"max_audio_ms": "1510"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_audio"
    assert growth < 24 * MB

    # Language detection listens to 30 s: decoding stops there.
    response, growth = peak_growth(pid, url, "/v1/detect-language", bomb, {})
    assert response.status_code == 200
    assert response.json()["duration"] == 30.0
    assert growth < 24 * MB

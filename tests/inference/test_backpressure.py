"""A bounded queue per model: refusal when full, recovery after, and work for callers who left
dropped before it reaches the model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.nodes import metric, node_process

MODEL = "pocketsphinx-en"


def in_flight(url: str) -> float:
    return metric(url, "asrnode_requests_in_flight", model=MODEL)


def in_engine(url: str) -> float:
    return metric(url, "asrnode_items_in_progress", model=MODEL)


class Background:
    """One request running in a thread, so the test can act while it is in flight."""

    def __init__(self, url: str, audio: bytes) -> None:
        self.response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._post, args=(url, audio))

    def _post(self, url: str, audio: bytes) -> None:
        self.response = httpx.post(
            f"{url}/v1/transcribe", files={"file": ("long.wav", audio)}, timeout=120
        )

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._thread.join(timeout=120)

    def wait_until_in_the_engine(self, url: str) -> None:
        deadline = time.monotonic() + 30
        while in_engine(url) < 1:
            assert time.monotonic() < deadline, "the long request never started"
            time.sleep(0.02)


@pytest.fixture(scope="module")
def tight_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One request at a time, one item per engine call; 40 s of audio is a single item."""
    with node_process(
        tmp_path_factory.mktemp("tight-node"),
        MODEL,
        max_batch=1,
        max_queue=1,
        max_segment_seconds=60,
    ) as url:
        yield url


@pytest.fixture(scope="module")
def queueing_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with node_process(
        tmp_path_factory.mktemp("queueing-node"),
        MODEL,
        max_batch=1,
        max_queue=8,
        max_segment_seconds=60,
    ) as url:
        yield url


class TestBackpressure:
    def test_full_queue_is_503_node_overloaded_then_serves_again(
        self, tight_node: str, forty_seconds_wav: Path, weather_wav: Path
    ) -> None:
        overloaded_before = metric(tight_node, "asrnode_overloaded_total", model=MODEL)
        with Background(tight_node, forty_seconds_wav.read_bytes()) as long_request:
            long_request.wait_until_in_the_engine(tight_node)
            refused = httpx.post(
                f"{tight_node}/v1/transcribe", files={"file": ("a.wav", weather_wav.read_bytes())}
            )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "node_overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        assert metric(tight_node, "asrnode_overloaded_total", model=MODEL) == overloaded_before + 1
        assert long_request.response is not None
        assert long_request.response.status_code == 200
        again = httpx.post(
            f"{tight_node}/v1/transcribe", files={"file": ("a.wav", weather_wav.read_bytes())}
        )
        assert again.status_code == 200
        assert "weather" in again.json()["text"]

    def test_a_caller_who_left_is_dropped_before_inference(
        self, queueing_node: str, forty_seconds_wav: Path, weather_wav: Path
    ) -> None:
        dropped_before = metric(
            queueing_node, "asrnode_dropped_items_total", model=MODEL, reason="client_gone"
        )
        with Background(queueing_node, forty_seconds_wav.read_bytes()) as long_request:
            long_request.wait_until_in_the_engine(queueing_node)
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    f"{queueing_node}/v1/transcribe",
                    files={"file": ("a.wav", weather_wav.read_bytes())},
                    timeout=httpx.Timeout(5, read=0.3),
                )
        assert long_request.response is not None
        assert long_request.response.status_code == 200
        deadline = time.monotonic() + 10
        while (
            metric(queueing_node, "asrnode_dropped_items_total", model=MODEL, reason="client_gone")
            == dropped_before
        ):
            assert time.monotonic() < deadline, "the abandoned item was not dropped"
            time.sleep(0.05)
        assert in_flight(queueing_node) == 0

"""No engine's answer depends on earlier requests: audio A decoded, then a long B, then A again
gives A's first result exactly, on every engine (one customer's audio never changes another's
transcript)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from inference.app import create_app
from inference.config import InferenceSettings
from tests.fixtures.nodes import node_process
from tests.inference.test_node_app import wait_ready

Post = Callable[[bytes], dict[str, object]]


def result_of(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    body.pop("processing_ms")
    return body


def poster(url: str) -> Post:
    def post(audio: bytes) -> dict[str, object]:
        return result_of(
            httpx.post(
                f"{url}/v1/transcribe",
                files={"file": ("a.wav", audio)},
                data={"word_timestamps": "true"},
                timeout=300,
            )
        )

    return post


def assert_a_unchanged_by_b(post: Post, a: bytes, b: bytes) -> None:
    first = post(a)
    assert first["text"], "A must be heard as something for the comparison to mean anything"
    post(b)
    assert post(a) == first


@pytest.fixture(scope="module")
def pocketsphinx_whole_utterances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """40 s decoded as one utterance: the case in which the decoder's carried-over noise
    estimate once turned "the weather is nice today" into "unless there is a nice today"."""
    with node_process(
        tmp_path_factory.mktemp("ps-determinism"),
        "pocketsphinx-en",
        max_batch=1,
        max_segment_seconds=60,
    ) as url:
        yield url


class TestEarlierRequestsChangeNothing:
    def test_pocketsphinx(
        self, pocketsphinx_whole_utterances: str, weather_wav: Path, forty_seconds_wav: Path
    ) -> None:
        assert_a_unchanged_by_b(
            poster(pocketsphinx_whole_utterances),
            weather_wav.read_bytes(),
            forty_seconds_wav.read_bytes(),
        )

    def test_whisper(
        self, whisper_node_url: str, two_sentences_wav: Path, forty_seconds_wav: Path
    ) -> None:
        assert_a_unchanged_by_b(
            poster(whisper_node_url), two_sentences_wav.read_bytes(), forty_seconds_wav.read_bytes()
        )

    def test_funasr_paraformer(
        self, paraformer_dir: Path, weather_wav: Path, forty_seconds_wav: Path
    ) -> None:
        settings = InferenceSettings(models=f"tiny-paraformer={paraformer_dir}", device="cpu")
        with TestClient(create_app(settings)) as client:
            wait_ready(client, timeout=120)

            def post(audio: bytes) -> dict[str, object]:
                return result_of(
                    client.post(
                        "/v1/transcribe",
                        files={"file": ("a.wav", audio)},
                        data={"word_timestamps": "true"},
                    )
                )

            assert_a_unchanged_by_b(post, weather_wav.read_bytes(), forty_seconds_wav.read_bytes())

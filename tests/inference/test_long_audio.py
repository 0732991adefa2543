"""Long audio is cut by VAD; times in the canonical result are seconds in the whole file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference.app import create_app
from inference.config import InferenceSettings
from tests.inference.test_node_app import wait_ready


@pytest.fixture(scope="module")
def paraformer_client(paraformer_dir: Path) -> Iterator[TestClient]:
    settings = InferenceSettings(models=f"tiny-paraformer={paraformer_dir}", device="cpu")
    with TestClient(create_app(settings)) as client:
        wait_ready(client, timeout=120)
        yield client


def assert_timeline(segments: list[dict[str, float]], duration: float) -> None:
    previous_end = 0.0
    for segment in segments:
        assert previous_end <= segment["start"] < segment["end"] <= duration + 0.001
        previous_end = segment["end"]


class TestLongAudio:
    def test_ten_minutes_are_segmented_with_increasing_timestamps(
        self, paraformer_client: TestClient, ten_minutes_wav: Path
    ) -> None:
        response = paraformer_client.post(
            "/v1/transcribe", files={"file": ("ten.wav", ten_minutes_wav.read_bytes())}
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["duration"] == pytest.approx(600, abs=0.01)
        segments = result["segments"]
        # At most 20 s per VAD span: at least 30 spans for 10 minutes of steady speech.
        assert len(segments) >= 30
        assert_timeline(segments, result["duration"])
        assert max(segment["end"] - segment["start"] for segment in segments) <= 20.5
        assert segments[-1]["end"] > 560

    def test_word_timestamps_are_shifted_into_the_whole_file(self, forty_seconds_wav: Path) -> None:
        settings = InferenceSettings(models="pocketsphinx-en", max_segment_seconds=10)
        with TestClient(create_app(settings)) as client:
            wait_ready(client)
            response = client.post(
                "/v1/transcribe",
                files={"file": ("forty.wav", forty_seconds_wav.read_bytes())},
                data={"word_timestamps": "true"},
            )
        result = response.json()
        assert_timeline(result["segments"], result["duration"])
        words = [word for segment in result["segments"] for word in segment["words"]]
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
        assert words[-1]["end"] > 30  # later spans were offset, not restarted at zero
        assert "tomorrow morning" in result["text"]
        assert len(result["text"].split()) > 40

    def test_too_long_is_413(self, weather_wav: Path) -> None:
        settings = InferenceSettings(models="pocketsphinx-en", max_audio_seconds=1)
        with TestClient(create_app(settings)) as client:
            wait_ready(client)
            response = client.post(
                "/v1/transcribe", files={"file": ("a.wav", weather_wav.read_bytes())}
            )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "audio_too_long"

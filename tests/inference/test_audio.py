from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from inference.audio import SAMPLE_RATE, decode_audio
from inference.errors import InvalidAudio
from tests.fixtures.audio import PNG_IMAGE
from tests.fixtures.environment import require_tool

CONTAINERS = ["wav", "mp3", "m4a", "mp4", "webm", "ogg", "flac"]


def encode(source: Path, target: Path) -> Path:
    """Encode with the ffmpeg CLI; the container and its default codec follow the extension."""
    require_tool("ffmpeg")
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), "-ac", "2", str(target)],
        check=True,
    )
    return target


class TestDecode:
    @pytest.mark.parametrize("extension", CONTAINERS)
    def test_containers_decode_to_16k_mono(
        self, weather_wav: Path, tmp_path: Path, extension: str
    ) -> None:
        # espeak-ng writes 22.05 kHz mono; the fixtures are stereo; the decoder makes 16k mono.
        source = encode(weather_wav, tmp_path / f"speech.{extension}")
        samples = decode_audio(source.read_bytes())
        original = decode_audio(weather_wav.read_bytes())
        assert samples.dtype.name == "float32"
        assert samples.ndim == 1
        # Lossy codecs add encoder delay and padding: a few tens of milliseconds.
        assert abs(samples.size - original.size) < SAMPLE_RATE * 0.1
        assert 0.01 < float(abs(samples).max()) <= 1.0

    def test_truncated_container_is_invalid(self, weather_wav: Path, tmp_path: Path) -> None:
        whole = encode(weather_wav, tmp_path / "speech.m4a").read_bytes()
        with pytest.raises(InvalidAudio, match="truncated or corrupt"):
            decode_audio(whole[: len(whole) // 4])

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"", "empty"),
            (PNG_IMAGE, "no audio stream"),
            (b"this is plain text, not audio at all", "not a recognized audio"),
        ],
    )
    def test_bad_input_says_what_is_wrong(self, data: bytes, message: str) -> None:
        with pytest.raises(InvalidAudio, match=message):
            decode_audio(data)

    def test_wav_header_without_samples_has_zero_duration(self, weather_wav: Path) -> None:
        header_only = weather_wav.read_bytes()[:44]
        with pytest.raises(InvalidAudio, match="zero duration"):
            decode_audio(header_only)

    def test_truncated_header_is_not_a_container(self, weather_wav: Path) -> None:
        with pytest.raises(InvalidAudio, match="not a recognized audio"):
            decode_audio(weather_wav.read_bytes()[:20])

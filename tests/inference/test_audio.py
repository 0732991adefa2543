"""The node's decoder: every accepted container to 16 kHz mono float32, and never more than
the request's limit decoded or held, whatever the file says or holds."""

from __future__ import annotations

import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from inference.audio import (
    SAMPLE_RATE,
    DecodeLimit,
    declared_limit,
    decode_audio,
    node_limit,
    request_limit,
)
from inference.errors import AudioTooLong, InvalidAudio
from tests.fixtures import hostile_media as media
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
            (PNG_IMAGE, "not an accepted audio or video format"),
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

    def test_video_without_audio_has_no_audio_stream(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidAudio, match="no audio stream"):
            decode_audio(media.video_only(tmp_path))


class TestAcceptedContainersOnly:
    def test_inputs_that_read_other_files_are_refused(
        self, weather_wav: Path, tmp_path: Path
    ) -> None:
        target = str(weather_wav)
        with pytest.raises(InvalidAudio, match="not an accepted audio or video format"):
            decode_audio(media.ffconcat(target))
        for data in (media.hls_playlist(target), media.dash_manifest(target)):
            with pytest.raises(InvalidAudio, match=r"not a(n accepted| recognized) audio or video"):
                decode_audio(data)
        with pytest.raises(InvalidAudio, match="not an accepted audio or video format"):
            decode_audio(media.jpeg_image(tmp_path))


def peak_bytes_while(decode: object) -> int:
    """The most memory Python and numpy held at once while ``decode()`` ran."""
    tracemalloc.start()
    try:
        try:
            decode()  # type: ignore[operator]
        except (InvalidAudio, AudioTooLong):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class TestBoundedDecoding:
    def test_a_file_that_decodes_past_its_measured_length_is_refused(
        self, speech_25s_wav: Path, tmp_path: Path
    ) -> None:
        lying = media.flac_claiming(media.encode(speech_25s_wav, tmp_path / "s.flac"), 1)
        with pytest.raises(InvalidAudio, match="more audio than its packets declare"):
            decode_audio(lying, declared_limit(1_510))
        # Measured honestly, it decodes whole.
        assert decode_audio(lying, declared_limit(25_750)).size == 25 * SAMPLE_RATE

    def test_without_a_declared_length_the_node_limit_applies_while_decoding(
        self, speech_25s_wav: Path
    ) -> None:
        with pytest.raises(AudioTooLong, match="at most 10 s"):
            decode_audio(speech_25s_wav.read_bytes(), node_limit(10))

    def test_a_clip_stops_quietly(self, silent_hour_flac: bytes) -> None:
        clip = decode_audio(silent_hour_flac, request_limit(4 * 3600, None, 30))
        assert clip.size == 30 * SAMPLE_RATE
        # A declared length beyond the clip does not matter; one below it is a refusal.
        clip = decode_audio(silent_hour_flac, request_limit(4 * 3600, 3_600_000, 30))
        assert clip.size == 30 * SAMPLE_RATE
        with pytest.raises(InvalidAudio, match="more audio than its packets declare"):
            decode_audio(silent_hour_flac, request_limit(4 * 3600, 5_000, 30))

    def test_the_tightest_limit_applies(self) -> None:
        assert request_limit(60, None).seconds == 60
        assert request_limit(60, 30_000).refusal is not None
        assert request_limit(60, 30_000).seconds == 30
        assert request_limit(60, 90_000).seconds == 60  # the node's own limit
        assert request_limit(60, 30_000, 30).refusal is None  # the clip, quietly
        assert request_limit(60, 10_000, 30).seconds == 10

    def test_a_growing_buffer_and_a_preallocated_one_hold_the_same_samples(
        self, speech_25s_wav: Path, tmp_path: Path
    ) -> None:
        """Growing from 30 s (doubling) and preallocated to the limit give the same audio."""
        long = tmp_path / "long.wav"
        subprocess.run(["sox", *[str(speech_25s_wav)] * 4, str(long)], check=True)
        data = long.read_bytes()
        grown = decode_audio(data, node_limit(3600))
        preallocated = decode_audio(data, DecodeLimit(101, None, preallocate=True))
        assert grown.size == preallocated.size == 100 * SAMPLE_RATE
        assert np.array_equal(grown, preallocated)

    def test_a_decompression_bomb_never_takes_more_than_the_limit(
        self, silent_hour_flac: bytes
    ) -> None:
        whole_file = 3600 * SAMPLE_RATE * 4  # float32 samples of the whole hour: 230 MB
        assert whole_file / len(silent_hour_flac) >= 300
        sixty_seconds = 60 * SAMPLE_RATE * 4
        # The node's own limit of 60 s: the buffer grows to it, then 413.
        peak = peak_bytes_while(lambda: decode_audio(silent_hour_flac, node_limit(60)))
        assert peak < 2 * sixty_seconds
        # Measured at 1 s by the gateway: refused after about a second of audio.
        peak = peak_bytes_while(lambda: decode_audio(silent_hour_flac, declared_limit(1_510)))
        assert peak < 1024 * 1024
        with pytest.raises(AudioTooLong):
            decode_audio(silent_hour_flac, node_limit(60))

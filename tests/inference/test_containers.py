"""The one whitelist of containers, shared by the gateway's probe and the node's decoder."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from inference.containers import ACCEPTED_DEMUXERS, CONTAINER_OPTIONS, UnreadableAudio, open_audio
from tests.fixtures import hostile_media as media

# Demuxers that read other files or URLs, images, subtitles, data, devices or raw guesses.
NEVER = {
    "concat", "hls", "dash", "image2", "image2pipe", "png_pipe", "jpeg_pipe", "webp_pipe",
    "tee", "lavfi", "data", "bin", "tty", "srt", "webvtt", "ass", "ffmetadata", "sdp", "rtsp",
    "rtp", "sap", "s16le", "u8", "f32le", "rawvideo", "mpjpeg", "smoothstreaming", "hds",
}  # fmt: skip


class TestWhitelist:
    @pytest.mark.parametrize("name", ACCEPTED_DEMUXERS)
    def test_every_name_is_an_ffmpeg_demuxer(self, name: str) -> None:
        assert name in av.formats_available
        demuxer = av.format.ContainerFormat(name, "r")
        assert name in demuxer.name.split(",")

    def test_no_demuxer_that_reads_elsewhere_or_guesses(self) -> None:
        assert not NEVER & set(ACCEPTED_DEMUXERS)

    def test_no_protocol_even_for_a_demuxer_that_asks_for_one(self, weather_wav: Path) -> None:
        """Were the concat demuxer let in, it still could not open the file it names."""
        options = {**CONTAINER_OPTIONS, "format_whitelist": "concat"}
        with pytest.raises(av.error.FFmpegError):
            av.open(io.BytesIO(media.ffconcat(str(weather_wav))), container_options=options)

    def test_refusals_say_what_is_accepted(self, weather_wav: Path) -> None:
        with pytest.raises(UnreadableAudio, match="not an accepted audio or video format") as e:
            open_audio(media.ffconcat(str(weather_wav)))
        assert "FLAC" in e.value.message
        assert "MP4/M4A" in e.value.message

    def test_the_first_audio_stream(self, weather_wav: Path) -> None:
        container, stream = open_audio(weather_wav.read_bytes())
        with container:
            assert stream.type == "audio"
            assert container.format.name == "wav"

"""The probe's WAV header path answers exactly what FFmpeg answers, and leaves to FFmpeg every
WAV it is not sure of."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import pytest

from gateway.audio_probe import ffmpeg_duration_ms, probe_duration_ms, wav_duration_ms
from gateway.errors import InvalidAudio
from tests.fixtures.audio import convert

EXTENSIBLE_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WAVE" + b"".join(
        name + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
        for name, data in chunks
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(tag: int, channels: int, rate: int, bits: int) -> bytes:
    block_align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits)


def extensible_fmt(subformat: int, channels: int, rate: int, bits: int) -> bytes:
    basic = fmt_chunk(0xFFFE, channels, rate, bits)
    extension = struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", subformat)
    return basic + extension + EXTENSIBLE_GUID_TAIL


def stdlib_wav(frames: int, rate: int, channels: int, width: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(b"\x01" * frames * channels * width)
    return buffer.getvalue()


class TestWavHeaderPath:
    @pytest.mark.parametrize("rate", [8_000, 11_025, 16_000, 22_050, 44_100, 48_000])
    @pytest.mark.parametrize("channels", [1, 2, 6])
    @pytest.mark.parametrize("width", [1, 2, 3, 4])
    @pytest.mark.parametrize("frames", [1, 4_321, 160_007])
    def test_pcm_matches_ffmpeg(self, rate: int, channels: int, width: int, frames: int) -> None:
        data = stdlib_wav(frames, rate, channels, width)
        from_header = wav_duration_ms(data)
        if frames * 1000 / rate < 0.5:
            assert from_header is None  # zero milliseconds: FFmpeg's path says what is wrong
            return
        assert from_header == ffmpeg_duration_ms(data)

    @pytest.mark.parametrize(("tag", "bits"), [(1, 16), (3, 32), (3, 64), (1, 24)])
    def test_float_extensible_and_extra_chunks_match_ffmpeg(self, tag: int, bits: int) -> None:
        samples = b"\x00" * (2 * bits // 8) * 33_333
        for data in (
            riff((b"fmt ", fmt_chunk(tag, 2, 22_050, bits)), (b"data", samples)),
            riff((b"fmt ", extensible_fmt(tag, 2, 22_050, bits)), (b"data", samples)),
            riff(
                (b"JUNK", b"\0" * 27),
                (b"fmt ", fmt_chunk(tag, 2, 22_050, bits)),
                (b"LIST", b"INFOISFT\x05\0\0\0odd!\0"),
                (b"data", samples),
                (b"id3 ", b"tail"),
            ),
        ):
            assert wav_duration_ms(data) == ffmpeg_duration_ms(data) == 1512

    def test_a_real_recording_matches_ffmpeg(self, weather_wav: Path, tmp_path: Path) -> None:
        for source in (weather_wav, convert(weather_wav, tmp_path / "s.wav", "-r", "44100")):
            data = source.read_bytes()
            assert wav_duration_ms(data) == ffmpeg_duration_ms(data)

    @pytest.mark.parametrize(
        "data",
        [
            pytest.param(stdlib_wav(16_000, 16_000, 1, 2)[:-100], id="truncated data"),
            pytest.param(
                riff((b"fmt ", fmt_chunk(1, 1, 16_000, 16)), (b"data", b"")), id="empty data"
            ),
            pytest.param(
                riff((b"fmt ", fmt_chunk(7, 1, 8_000, 8)), (b"data", b"\xff" * 8_000)),
                id="mu-law",
            ),
            pytest.param(
                riff((b"fmt ", fmt_chunk(1, 1, 16_000, 12)), (b"data", b"\0" * 3_000)),
                id="12-bit",
            ),
            pytest.param(riff((b"data", b"\0" * 3_200)), id="no fmt chunk"),
            pytest.param(b"RIFF\x10\0\0\0WAVEfmt ", id="cut header"),
            pytest.param(b"ID3\x04" + b"\0" * 600, id="not a wav"),
        ],
    )
    def test_anything_unusual_is_left_to_ffmpeg(self, data: bytes) -> None:
        assert wav_duration_ms(data) is None

    def test_streamed_wav_of_unknown_length_is_left_to_ffmpeg(self) -> None:
        data = bytearray(stdlib_wav(16_000, 16_000, 1, 2))
        data[40:44] = b"\xff\xff\xff\xff"  # the data chunk's size, as a pipe writes it
        assert wav_duration_ms(bytes(data)) is None
        assert probe_duration_ms(bytes(data)) == 1000


class TestProbe:
    def test_wav_and_other_containers(self, weather_wav: Path, tmp_path: Path) -> None:
        flac = convert(weather_wav, tmp_path / "speech.flac")
        assert probe_duration_ms(weather_wav.read_bytes()) == ffmpeg_duration_ms(
            weather_wav.read_bytes()
        )
        assert (
            abs(probe_duration_ms(flac.read_bytes()) - probe_duration_ms(weather_wav.read_bytes()))
            <= 1
        )

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"", "empty"),
            (riff((b"fmt ", fmt_chunk(1, 1, 16_000, 16)), (b"data", b"")), "zero duration"),
            (b"definitely not audio" * 20, "not a recognized audio"),
        ],
    )
    def test_refusals_say_what_is_wrong(self, data: bytes, message: str) -> None:
        with pytest.raises(InvalidAudio, match=message):
            probe_duration_ms(data)

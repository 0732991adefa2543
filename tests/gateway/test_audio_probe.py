"""The probe measures the length from what the file holds (packets, or samples), never from a
header the client wrote; it opens only accepted containers; it stops measuring past its limit.
Its WAV header path answers exactly what the packets answer, and leaves every WAV it is not
sure of to them."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import pytest

from gateway.audio_probe import (
    LengthLimit,
    heard_duration_ms,
    packet_duration_ms,
    probe_duration_ms,
    wav_duration_ms,
)
from gateway.errors import InvalidAudio
from tests.fixtures.audio import convert

EXTENSIBLE_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
AN_HOUR = LengthLimit(3600, "tests")


def ffmpeg_duration_ms(data: bytes) -> int:
    """The packet path, whole: what FFmpeg's demuxer holds."""
    return packet_duration_ms(data, 10**9)


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
            ),
        ):
            assert wav_duration_ms(data) == ffmpeg_duration_ms(data) == 1512
        # A chunk after the data is FFmpeg's to read: the packets measure it.
        tail = riff((b"fmt ", fmt_chunk(tag, 2, 22_050, bits)), (b"data", samples), (b"id3 ", b""))
        assert wav_duration_ms(tail) is None
        assert probe_duration_ms(tail, AN_HOUR) == 1512

    def test_the_pad_byte_of_an_odd_data_chunk_is_not_a_chunk_after_it(self) -> None:
        data = riff((b"fmt ", fmt_chunk(1, 1, 8_000, 8)), (b"data", b"\x80" * 8_001))
        assert len(data) % 2 == 0  # the pad byte is there
        assert wav_duration_ms(data) == ffmpeg_duration_ms(data) == 1000

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
        assert probe_duration_ms(bytes(data), AN_HOUR) == 1000


class TestProbe:
    def test_wav_and_other_containers(self, weather_wav: Path, tmp_path: Path) -> None:
        flac = convert(weather_wav, tmp_path / "speech.flac")
        wav_ms = probe_duration_ms(weather_wav.read_bytes(), AN_HOUR)
        assert wav_ms == ffmpeg_duration_ms(weather_wav.read_bytes())
        assert abs(probe_duration_ms(flac.read_bytes(), AN_HOUR) - wav_ms) <= 1

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
            probe_duration_ms(data, AN_HOUR)


def header_seconds(data: bytes) -> float:
    """The length the container's header states (what the probe once trusted)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        return float(container.duration or 0) / av.time_base


def decoded_ms(data: bytes) -> int:
    """What the node decodes the file to, in milliseconds."""
    from inference.audio import SAMPLE_RATE, decode_audio

    return round(decode_audio(data).size * 1000 / SAMPLE_RATE)


# (file name, ffmpeg options): every accepted container with its usual codec, and the codecs
# whose packets measure short when only durations are summed (Vorbis; millisecond time bases in
# Matroska, FLV and ASF) or state no duration at all (ALAC in Matroska).
ENCODINGS = [
    ("s.flac", ()),
    ("s.mp3", ("-q:a", "4")),
    ("s.m4a", ()),
    ("s.ogg", ()),
    ("s.opus", ()),
    ("s.webm", ()),
    ("vorbis.mka", ("-c:a", "libvorbis")),
    ("pcm.mka", ("-c:a", "pcm_s16le")),
    ("alac.mka", ("-c:a", "alac")),
    ("s.flv", ("-ar", "44100")),
    ("s.wma", ()),
    ("s.ac3", ()),
    ("s.aac", ()),
    ("s.aiff", ()),
    ("s.caf", ()),
    ("s.au", ()),
    ("s.w64", ()),
    ("s.wv", ()),
    ("s.avi", ()),
    ("s.mpg", ()),
    ("s.ts", ()),
]


class TestLengthFromPackets:
    @pytest.mark.parametrize(("name", "options"), ENCODINGS, ids=[e[0] for e in ENCODINGS])
    def test_the_measure_is_what_the_node_decodes(
        self, speech_25s_wav: Path, tmp_path: Path, name: str, options: tuple[str, ...]
    ) -> None:
        from gateway.nodes.wire import decode_allowance_ms
        from tests.fixtures.hostile_media import encode

        data = encode(speech_25s_wav, tmp_path / name, *options)
        measured = probe_duration_ms(data, AN_HOUR)
        decoded = decoded_ms(data)
        # Never notably short (the node's margin is all the slack there is), never inflated
        # beyond encoder padding.
        assert decoded - 50 <= measured <= decoded + 200
        assert decoded <= decode_allowance_ms(measured)

    def test_packets_without_durations_are_counted_by_decoding(
        self, speech_25s_wav: Path, tmp_path: Path
    ) -> None:
        import av

        from tests.fixtures.hostile_media import encode

        data = encode(speech_25s_wav, tmp_path / "alac.mka", "-c:a", "alac")
        with av.open(io.BytesIO(data)) as container:
            assert not any(packet.duration for packet in container.demux(audio=0) if packet.size)
        assert probe_duration_ms(data, AN_HOUR) == decoded_ms(data) == 25_000


class TestLyingHeaders:
    """The header says one second; the packets hold 25."""

    def lies(self, speech: Path, directory: Path) -> dict[str, bytes]:
        from tests.fixtures import hostile_media as media

        return {
            "flac streaminfo": media.flac_claiming(media.encode(speech, directory / "s.flac"), 1),
            "mp3 xing frames": media.mp3_claiming(
                media.encode(speech, directory / "s.mp3", "-q:a", "4"), 1
            ),
            "m4a mvhd/mdhd": media.mp4_claiming(media.encode(speech, directory / "s.m4a"), 1),
            "opus granules": media.ogg_granules_divided(
                media.encode(speech, directory / "s.opus"), 25
            ),
        }

    def test_the_packets_are_measured_not_the_header(
        self, speech_25s_wav: Path, tmp_path: Path
    ) -> None:
        for name, data in self.lies(speech_25s_wav, tmp_path).items():
            assert header_seconds(data) < 1.5, name
            measured = probe_duration_ms(data, AN_HOUR)
            assert 24_950 <= measured <= 25_200, name
            assert decoded_ms(data) - 50 <= measured, name

    def test_a_wav_data_size_is_what_ffmpeg_reads_and_what_is_measured(
        self, speech_25s_wav: Path
    ) -> None:
        from tests.fixtures.hostile_media import wav_claiming, wav_in_two_data_chunks

        # 1 s declared, 25 s present: FFmpeg stops at the chunk's end, and so does the measure.
        short = wav_claiming(speech_25s_wav.read_bytes(), 1)
        assert wav_duration_ms(short) is None
        assert probe_duration_ms(short, AN_HOUR) == decoded_ms(short) == 1_000
        # Two data chunks: FFmpeg plays from the last one; the measure is what it plays.
        split = wav_in_two_data_chunks(speech_25s_wav.read_bytes(), 1)
        assert wav_duration_ms(split) is None
        assert probe_duration_ms(split, AN_HOUR) == decoded_ms(split) == 24_000

    def test_a_second_fmt_chunk_is_left_to_the_packets(self) -> None:
        samples = b"\0" * 32_000
        data = riff(
            (b"fmt ", fmt_chunk(1, 1, 16_000, 16)),
            (b"fmt ", fmt_chunk(1, 2, 8_000, 16)),
            (b"data", samples),
        )
        assert wav_duration_ms(data) is None
        assert probe_duration_ms(data, AN_HOUR) == 1_000  # FFmpeg keeps the first


class TestMeasuringStopsAtTheLimit:
    def test_an_hour_behind_a_one_second_header_is_too_long(self, silent_hour_flac: bytes) -> None:
        from gateway.errors import AudioTooLong
        from tests.fixtures.hostile_media import flac_claiming

        lie = flac_claiming(silent_hour_flac, 1)
        assert header_seconds(lie) == 1
        limit = LengthLimit(300, "synchronous requests", "Submit longer audio as a job.")
        with pytest.raises(AudioTooLong, match="more than 300 seconds long") as refused:
            probe_duration_ms(lie, limit)
        assert refused.value.status_code == 413
        assert refused.value.code == "audio_too_long"
        assert "Submit longer audio as a job." in refused.value.message

    def test_counting_stops_at_the_first_packet_past_the_limit(
        self, silent_hour_flac: bytes
    ) -> None:
        # Packets of 16,384 samples at 8 kHz: 2.048 s each.
        counted = packet_duration_ms(silent_hour_flac, 300_000)
        assert 300_000 < counted <= 302_048
        assert heard_duration_ms(silent_hour_flac, 30_000) == 30_000

    def test_counting_decoded_samples_stops_too(self, tmp_path: Path) -> None:
        from tests.fixtures.hostile_media import ffmpeg

        target = tmp_path / "silence.mka"
        ffmpeg(
            "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "120", "-c:a", "alac",
            str(target),
        )  # fmt: skip
        # ALAC frames of 4,096 samples at 8 kHz: 512 ms each.
        assert 10_000 < packet_duration_ms(target.read_bytes(), 10_000) <= 10_512


class TestAcceptedContainersOnly:
    def test_inputs_that_read_other_files_are_refused(self, weather_wav: Path) -> None:
        from tests.fixtures import hostile_media as media

        target = str(weather_wav)
        for data in (media.ffconcat(target), media.hls_playlist(target)):
            with pytest.raises(InvalidAudio, match=r"not a(n accepted| recognized) audio or video"):
                probe_duration_ms(data, AN_HOUR)
        with pytest.raises(InvalidAudio, match="not an accepted audio or video format"):
            probe_duration_ms(media.ffconcat(target), AN_HOUR)
        with pytest.raises(InvalidAudio, match=r"not a(n accepted| recognized) audio or video"):
            probe_duration_ms(media.dash_manifest(target), AN_HOUR)

    def test_images_and_video_without_audio_are_refused(self, tmp_path: Path) -> None:
        from tests.fixtures import hostile_media as media
        from tests.fixtures.audio import PNG_IMAGE

        for image in (PNG_IMAGE, media.jpeg_image(tmp_path)):
            with pytest.raises(InvalidAudio, match="not an accepted audio or video format"):
                probe_duration_ms(image, AN_HOUR)
        with pytest.raises(InvalidAudio, match="no audio stream"):
            probe_duration_ms(media.video_only(tmp_path), AN_HOUR)

    def test_truncated_and_empty_files(self, speech_25s_wav: Path, tmp_path: Path) -> None:
        from tests.fixtures.hostile_media import encode

        m4a = encode(speech_25s_wav, tmp_path / "s.m4a")
        with pytest.raises(InvalidAudio, match="truncated or corrupt"):
            probe_duration_ms(m4a[: len(m4a) // 2], AN_HOUR)
        # What a cut MP3 holds is measured, and it is what the node decodes.
        mp3 = encode(speech_25s_wav, tmp_path / "s.mp3")
        half = mp3[: len(mp3) // 2]
        assert decoded_ms(half) - 50 <= probe_duration_ms(half, AN_HOUR) <= decoded_ms(half) + 200
        with pytest.raises(InvalidAudio, match="empty"):
            probe_duration_ms(b"", AN_HOUR)

"""Probing an upload before any money is reserved or node time spent: is it audio, how long.

A plain PCM or floating-point WAV states its length in its header, which is read directly (a
few microseconds). Everything else goes to PyAV, which reads the container from memory; nothing
is decoded except, for containers that do not state their duration, packet headers. Opening a
container costs FFmpeg's stream probing, about 2.5 ms of CPU per upload, which the WAV path
skips; it answers exactly what FFmpeg would, and leaves every WAV it is not sure of to FFmpeg.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction

from gateway.errors import InvalidAudio

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
# Sample widths in bits FFmpeg reads for each format code.
PLAIN_SAMPLE_BITS = {WAVE_FORMAT_PCM: (8, 16, 24, 32), WAVE_FORMAT_IEEE_FLOAT: (32, 64)}
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The format code of an extensible WAV is the first two bytes of its sub-format GUID.
EXTENSIBLE_SUBFORMAT_OFFSET = 24
UNKNOWN_DATA_SIZE = 0xFFFFFFFF


def probe_duration_ms(data: bytes) -> int:
    """The audio's length in milliseconds; ``InvalidAudio`` saying what is wrong otherwise."""
    if not data:
        raise InvalidAudio("The audio file is empty (0 bytes).", param="file")
    from_header = wav_duration_ms(data)
    if from_header is not None:
        return from_header
    return ffmpeg_duration_ms(data)


def wav_duration_ms(data: bytes) -> int | None:
    """The length of a complete PCM or float WAV from its ``fmt `` and ``data`` chunks, as
    FFmpeg computes it (whole frames in the data chunk over the sample rate); ``None`` for
    anything else (other containers or codecs, truncated or streamed WAVs, odd headers)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    audio_format: tuple[int, int, int, int, int] | None = None
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + size > len(data):
                return None
            tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from(
                "<HHIIHH", data, body
            )
            if tag == WAVE_FORMAT_EXTENSIBLE:
                if size < EXTENSIBLE_SUBFORMAT_OFFSET + 16:
                    return None
                (tag,) = struct.unpack_from("<H", data, body + EXTENSIBLE_SUBFORMAT_OFFSET)
            audio_format = (tag, channels, rate, block_align, bits)
        elif chunk_id == b"data":
            if audio_format is None or size in (0, UNKNOWN_DATA_SIZE) or body + size > len(data):
                return None
            tag, channels, rate, block_align, bits = audio_format
            if bits not in PLAIN_SAMPLE_BITS.get(tag, ()) or not channels or not rate:
                return None
            if block_align != channels * bits // 8:
                return None
            frames = size // block_align
            # The same arithmetic as the FFmpeg path: frames in a time base of 1/rate.
            duration_ms = round(float(frames * Fraction(1, rate)) * 1000)
            return duration_ms if duration_ms > 0 else None
        # Chunks are padded to an even length.
        offset = body + size + (size & 1)
    return None


def ffmpeg_duration_ms(data: bytes) -> int:
    """The length PyAV (FFmpeg) finds in any container it reads."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as error:
        raise InvalidAudio(
            "The file is not a recognized audio or video container, or it is truncated or "
            f"corrupt ({error.__class__.__name__}).",
            param="file",
        ) from None
    with container:
        if not container.streams.audio:
            kinds = sorted({str(stream.type) for stream in container.streams})
            found = f"it contains only {', '.join(kinds)}" if kinds else "it contains no streams"
            raise InvalidAudio(f"The file has no audio stream ({found}).", param="file")
        stream = container.streams.audio[0]
        seconds = 0.0
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration:
            seconds = container.duration / av.time_base
        if seconds <= 0:
            try:
                for packet in container.demux(stream):
                    if packet.duration and packet.time_base:
                        seconds += float(packet.duration * packet.time_base)
            except av.error.FFmpegError:
                raise InvalidAudio(
                    "The audio stream is corrupt and cannot be read.", param="file"
                ) from None
    duration_ms = round(seconds * 1000)
    if duration_ms <= 0:
        raise InvalidAudio("The audio has zero duration.", param="file")
    return duration_ms

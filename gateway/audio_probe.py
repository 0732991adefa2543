"""Measuring an upload before any money is held or node time spent: is it audio, how long.

The length that holds money and applies limits is measured from what the file holds, never read
from a header field the client wrote (a FLAC's STREAMINFO, an MP4's ``mvhd``/``mdhd``, an MP3's
Xing frame count, the last Ogg granule). The upload is opened as one of the accepted containers
(``inference.containers``: no playlists, no concat, no protocols) and its first audio stream is
demuxed without decoding: its length is the sum of the packets' durations, or the span from the
first packet's start to the last one's end where that is longer (containers that keep times in
milliseconds round each packet's duration down, and FFmpeg's Vorbis packet durations fall short
where block sizes change: the sum alone can be 4% short of what decodes). Where a packet states
no duration the stream is decoded just to count its samples, keeping none. Measuring stops as
soon as the length passes the caller's limit, so a long file costs no more than the limit.

Whatever the packets say, the node is told the most it may decode (``gateway.nodes.wire``) and
refuses a file that decodes to more: understating the length gains a sender nothing, and
overstating it only holds more of their own money and meets the limits sooner.

A plain PCM or floating-point WAV whose ``data`` chunk is the file's last is measured from its
chunk sizes directly (a few microseconds, on the event loop): exactly what FFmpeg decodes from
it. Every other WAV, and everything else, is measured on a worker thread.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import anyio

from gateway.errors import AudioTooLong, InvalidAudio
from inference.containers import UnreadableAudio, open_audio

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import InputContainer

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
# Sample widths in bits FFmpeg reads for each format code.
PLAIN_SAMPLE_BITS = {WAVE_FORMAT_PCM: (8, 16, 24, 32), WAVE_FORMAT_IEEE_FLOAT: (32, 64)}
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The format code of an extensible WAV is the first two bytes of its sub-format GUID.
EXTENSIBLE_SUBFORMAT_OFFSET = 24
UNKNOWN_DATA_SIZE = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class LengthLimit:
    """The longest audio a route accepts, and what its refusal tells the customer."""

    seconds: float
    accepted_by: str  # who accepts at most this much: "synchronous requests", "jobs"
    advice: str = ""

    @property
    def ms(self) -> int:
        return round(self.seconds * 1000)

    def refusal(self) -> AudioTooLong:
        advice = f" {self.advice}" if self.advice else ""
        return AudioTooLong(
            f"The audio is more than {self.seconds:g} seconds long; {self.accepted_by} accept "
            f"at most {self.seconds:g} seconds.{advice}",
            param="file",
        )

    def checked(self, duration_ms: int) -> int:
        """``duration_ms``, or the refusal when it passes the limit."""
        if duration_ms > self.ms:
            raise self.refusal()
        return duration_ms


def probe_duration_ms(data: bytes, limit: LengthLimit) -> int:
    """The audio's length in milliseconds, measured from its packets; ``AudioTooLong`` as soon
    as it passes ``limit``, ``InvalidAudio`` saying what is wrong with anything else."""
    return limit.checked(measured_ms(data, limit.ms))


def heard_duration_ms(data: bytes, heard_ms: int) -> int:
    """How much of the audio, at most ``heard_ms``, there is: measuring stops there."""
    return min(measured_ms(data, heard_ms), heard_ms)


async def probe_audio_ms(data: bytes, limit: LengthLimit) -> int:
    """``probe_duration_ms``, off the event loop unless the file is a plain WAV."""
    return limit.checked(await measure_ms(data, limit.ms))


async def probe_heard_ms(data: bytes, heard_ms: int) -> int:
    """``heard_duration_ms``, off the event loop unless the file is a plain WAV."""
    return min(await measure_ms(data, heard_ms), heard_ms)


async def measure_ms(data: bytes, stop_after_ms: int) -> int:
    """``measured_ms``: a plain WAV on the spot, anything else on a worker thread."""
    from_header = wav_duration_ms(data)
    if from_header is not None:
        return from_header
    return await anyio.to_thread.run_sync(packet_duration_ms, data, stop_after_ms)


def measured_ms(data: bytes, stop_after_ms: int) -> int:
    """The audio's length in milliseconds, or, once it passes ``stop_after_ms``, the length
    counted when measuring stopped (more than ``stop_after_ms``). An empty file is refused
    when it is opened (``inference.containers``)."""
    from_header = wav_duration_ms(data)
    if from_header is not None:
        return from_header
    return packet_duration_ms(data, stop_after_ms)


def wav_duration_ms(data: bytes) -> int | None:
    """The length of a complete PCM or float WAV from its ``fmt `` and ``data`` chunks, as
    FFmpeg computes it (whole frames in the data chunk over the sample rate); ``None`` for
    anything else (other containers or codecs, truncated or streamed WAVs, odd headers), and
    for any WAV FFmpeg may read otherwise. FFmpeg takes the first ``fmt `` chunk, but from a
    seekable input it plays the last ``data`` chunk of the header scan and reads on into any
    ``data`` chunk after it: a second ``fmt `` chunk, or anything after the first ``data``
    chunk but its pad byte, is left to the packet path."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    audio_format: tuple[int, int, int, int, int] | None = None
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            if audio_format is not None or size < 16 or body + size > len(data):
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
            if len(data) - (body + size) > (size & 1):
                return None
            tag, channels, rate, block_align, bits = audio_format
            if bits not in PLAIN_SAMPLE_BITS.get(tag, ()) or not channels or not rate:
                return None
            if block_align != channels * bits // 8:
                return None
            frames = size // block_align
            # The same arithmetic as the packet path: frames in a time base of 1/rate.
            duration_ms = round(float(frames * Fraction(1, rate)) * 1000)
            return duration_ms if duration_ms > 0 else None
        # Chunks are padded to an even length.
        offset = body + size + (size & 1)
    return None


def packet_duration_ms(data: bytes, stop_after_ms: int) -> int:
    """The length of the first audio stream of any accepted container, from its packets (or
    its decoded samples where packets state no duration), measured up to ``stop_after_ms``."""
    import av

    seconds: Fraction | None = None
    try:
        container, stream = opened(data)
        with container:
            seconds = packet_seconds(container, stream, stop_after_ms)
        if seconds is None:
            container, stream = opened(data)
            with container:
                seconds = decoded_seconds(container, stream, stop_after_ms)
    except av.error.FFmpegError:
        raise InvalidAudio(
            "The audio stream is corrupt and cannot be read.", param="file"
        ) from None
    duration_ms = round(seconds * 1000)
    if duration_ms <= 0:
        raise InvalidAudio("The audio has zero duration.", param="file")
    return duration_ms


def opened(data: bytes) -> tuple[InputContainer, AudioStream]:
    try:
        return open_audio(data)
    except UnreadableAudio as error:
        raise InvalidAudio(error.message, param="file") from None


def packet_seconds(
    container: InputContainer, stream: AudioStream, stop_after_ms: int
) -> Fraction | None:
    """The stream's length from its packets, in seconds; ``None`` when a packet states no
    duration. Counted in the stream's time base, in integers: a packet costs a few additions."""
    time_base = stream.time_base
    if time_base is None or time_base <= 0:
        return None
    # ticks * time_base > stop_after_ms / 1000, in integers.
    stop_num, stop_den = stop_after_ms * time_base.denominator, 1000 * time_base.numerator
    summed = 0
    first: int | None = None
    end: int | None = None
    ticks = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the empty packet that ends a demux
        duration = packet.duration
        if not duration or duration < 0:
            return None
        summed += duration
        start = packet.pts if packet.pts is not None else packet.dts
        if start is not None:
            first = start if first is None else min(first, start)
            end = start + duration if end is None else max(end, start + duration)
        ticks = summed if first is None or end is None else max(summed, end - first)
        if ticks * stop_den > stop_num:
            break
    return Fraction(ticks) * time_base


def decoded_seconds(container: InputContainer, stream: AudioStream, stop_after_ms: int) -> Fraction:
    """The stream's length from its decoded samples, each frame dropped as soon as counted."""
    stop_after = Fraction(stop_after_ms, 1000)
    seconds = Fraction(0)
    for frame in container.decode(stream):
        if frame.sample_rate:
            seconds += Fraction(frame.samples, frame.sample_rate)
        if seconds > stop_after:
            break
    return seconds

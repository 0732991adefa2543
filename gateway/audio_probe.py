"""Probing an upload before any money is reserved or node time spent: is it audio, how long.

PyAV reads the container from memory; nothing is decoded except, for containers that do not
state their duration, packet headers.
"""

from __future__ import annotations

import io

from gateway.errors import InvalidAudio


def probe_duration_ms(data: bytes) -> int:
    """The audio's length in milliseconds; ``InvalidAudio`` saying what is wrong otherwise."""
    import av

    if not data:
        raise InvalidAudio("The audio file is empty (0 bytes).", param="file")
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

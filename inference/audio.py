"""Decoding any audio or video container to 16 kHz mono float32 with PyAV (FFmpeg inside).

Decoding runs from memory: no temporary file is written, so none can outlive a request.
"""

from __future__ import annotations

import io

import av
import numpy as np
import numpy.typing as npt

from inference.errors import InvalidAudio

SAMPLE_RATE = 16_000

AudioArray = npt.NDArray[np.float32]


def decode_audio(data: bytes) -> AudioArray:
    """The first audio stream of ``data`` as 16 kHz mono float32 in [-1, 1]."""
    if not data:
        raise InvalidAudio("The audio file is empty (0 bytes).")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as error:
        raise InvalidAudio(
            "The file is not a recognized audio or video container, or it is truncated or "
            f"corrupt ({error.__class__.__name__})."
        ) from None
    with container:
        if not container.streams.audio:
            kinds = sorted({str(stream.type) for stream in container.streams})
            found = f"it contains only {', '.join(kinds)}" if kinds else "it contains no streams"
            raise InvalidAudio(f"The file has no audio stream ({found}).")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks: list[AudioArray] = []
        try:
            for frame in container.decode(stream):
                for resampled in resampler.resample(frame):
                    chunks.append(resampled.to_ndarray().reshape(-1).astype(np.float32, copy=False))
            for resampled in resampler.resample(None):
                chunks.append(resampled.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        except av.error.FFmpegError as error:
            raise InvalidAudio(
                f"The audio stream is corrupt and cannot be decoded: {error}."
            ) from None
    if not chunks:
        raise InvalidAudio("The audio has zero duration.")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    if samples.size == 0:
        raise InvalidAudio("The audio has zero duration.")
    return samples


def duration_seconds(samples: AudioArray) -> float:
    return round(samples.size / SAMPLE_RATE, 3)


def to_pcm16(samples: AudioArray) -> bytes:
    clipped = np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()

"""Decoding an accepted audio or video container to 16 kHz mono float32 with PyAV (FFmpeg
inside), bounded: never more than the request's limit is decoded or held.

The file is opened as the gateway's probe opens it (``inference.containers``: whitelisted
demuxers, no protocols). Resampled samples are written into one float32 array as they come:
sized at once to the limit when the gateway measured the audio (``max_audio_ms``), else grown
geometrically up to the node's own limit. Decoding stops the moment the limit is passed, so a
small file that decodes to hours of audio costs no more memory than the limit allows.

Decoding runs from memory: no temporary file is written, so none can outlive a request.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from inference.config import InferenceSettings
from inference.containers import UnreadableAudio, open_audio
from inference.errors import AudioTooLong, InferenceError, InvalidAudio

SAMPLE_RATE = 16_000
# What a growing buffer starts with: 30 s of audio, 1.9 MB.
INITIAL_SAMPLES = 30 * SAMPLE_RATE
# The node's default INFERENCE_MAX_AUDIO_SECONDS: the limit of a direct call to decode_audio.
DEFAULT_MAX_SECONDS: float = InferenceSettings.model_fields["max_audio_seconds"].default

AudioArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class DecodeLimit:
    """The most audio one request may decode, and what happens when a file holds more."""

    seconds: float
    # The error raised past the limit; None keeps the first ``seconds`` and stops quietly.
    refusal: Callable[[], InferenceError] | None
    # The length is known (the gateway measured it): the whole buffer is taken at once.
    preallocate: bool = False

    @property
    def samples(self) -> int:
        return math.ceil(self.seconds * SAMPLE_RATE)


def node_limit(max_seconds: float) -> DecodeLimit:
    """The node's own limit (``INFERENCE_MAX_AUDIO_SECONDS``): 413 audio_too_long past it."""

    def refusal() -> InferenceError:
        return AudioTooLong(
            f"The audio is more than {max_seconds:g} s long; this node accepts at most "
            f"{max_seconds:g} s."
        )

    return DecodeLimit(max_seconds, refusal)


def declared_limit(max_audio_ms: int) -> DecodeLimit:
    """The length the gateway measured plus its margin: a file that decodes to more holds
    more audio than its packets declare, and is refused as invalid."""

    def refusal() -> InferenceError:
        return InvalidAudio(
            "The file holds more audio than its packets declare: it decodes to more than the "
            f"{max_audio_ms / 1000:g} s allowed for the length it was measured at."
        )

    return DecodeLimit(max_audio_ms / 1000, refusal, preallocate=True)


def request_limit(
    max_seconds: float, max_audio_ms: int | None, clip_seconds: float | None = None
) -> DecodeLimit:
    """The tightest of the node's limit, the gateway's ``max_audio_ms`` and a clip (the first
    ``clip_seconds``, kept quietly: language detection)."""
    limits = [node_limit(max_seconds)]
    if max_audio_ms is not None:
        limits.append(declared_limit(max_audio_ms))
    if clip_seconds is not None:
        limits.append(DecodeLimit(clip_seconds, None))
    # At equal length the quiet clip wins: decoding stops there without an error.
    return min(limits, key=lambda limit: (limit.samples, limit.refusal is not None))


class SampleBuffer:
    """Resampled audio written into one float32 array: preallocated to the limit, or doubled as
    it fills, never past the limit."""

    def __init__(self, limit: DecodeLimit) -> None:
        self.limit = limit
        capacity = limit.samples if limit.preallocate else min(INITIAL_SAMPLES, limit.samples)
        self.samples: AudioArray = np.empty(capacity, dtype=np.float32)
        self.filled = 0

    def append(self, chunk: npt.NDArray[np.float32]) -> bool:
        """Add ``chunk``; False once a quiet limit is reached (the caller stops decoding). Past
        a limit with a refusal, the refusal is raised; past a quiet one, the chunk is cut."""
        needed = self.filled + chunk.size
        if needed > self.limit.samples:
            if self.limit.refusal is not None:
                raise self.limit.refusal()
            chunk = chunk[: self.limit.samples - self.filled]
            needed = self.limit.samples
        if needed > self.samples.size:
            capacity = min(max(needed, 2 * self.samples.size), self.limit.samples)
            grown = np.empty(capacity, dtype=np.float32)
            grown[: self.filled] = self.samples[: self.filled]
            self.samples = grown
        self.samples[self.filled : needed] = chunk
        self.filled = needed
        return self.limit.refusal is not None or needed < self.limit.samples

    def audio(self) -> AudioArray:
        return self.samples[: self.filled]


def decode_audio(data: bytes, limit: DecodeLimit | None = None) -> AudioArray:
    """The first audio stream of ``data`` as 16 kHz mono float32 in [-1, 1], at most ``limit``
    (by default the node's default limit)."""
    limit = limit or node_limit(DEFAULT_MAX_SECONDS)
    try:
        container, stream = open_audio(data)
    except UnreadableAudio as error:
        raise InvalidAudio(error.message) from None
    buffer = SampleBuffer(limit)
    with container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                if not all(buffer.append(mono(out)) for out in resampler.resample(frame)):
                    break
            else:
                for resampled in resampler.resample(None):
                    if not buffer.append(mono(resampled)):
                        break
        except av.error.FFmpegError as error:
            raise InvalidAudio(
                f"The audio stream is corrupt and cannot be decoded: {error}."
            ) from None
    samples = buffer.audio()
    if samples.size == 0:
        raise InvalidAudio("The audio has zero duration.")
    return samples


def mono(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    return frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)


def duration_seconds(samples: AudioArray) -> float:
    return round(samples.size / SAMPLE_RATE, 3)


def to_pcm16(samples: AudioArray) -> bytes:
    clipped = np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()

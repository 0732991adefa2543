"""Cutting long audio into speech spans with Silero VAD, run as ONNX by onnxruntime (the model
ships inside faster-whisper; no torch).

Spans are merged up to ``max_segment_seconds`` so the engine gets few, well-filled items; a
single stretch of speech longer than that is cut by Silero at its quietest point. Each call
starts the model from a zero state, so a span never depends on audio seen before.
"""

from __future__ import annotations

from typing import Any

from inference.audio import SAMPLE_RATE, AudioArray

Span = tuple[int, int]

# Silero's standard settings (those of the silero-vad package): speech of at least 250 ms,
# ended by 100 ms of silence, padded by 30 ms.
THRESHOLD = 0.5
MIN_SPEECH_MS = 250
MIN_SILENCE_MS = 100
SPEECH_PAD_MS = 30


def _faster_whisper_vad() -> Any:
    """faster-whisper's VAD module, imported after its package. Importing ``faster_whisper.vad``
    first takes that module's import lock and then the package's, while the engine loading on
    another thread imports the package, whose ``__init__`` imports ``faster_whisper.vad``: the
    two locks taken in opposite orders, which Python breaks by raising ``_DeadlockError`` in one
    of the threads (the node's model then fails to load)."""
    import faster_whisper  # the package, and its import lock, first
    import faster_whisper.vad

    return faster_whisper.vad


class VadSegmenter:
    def __init__(self, max_segment_seconds: float = 20.0) -> None:
        self.max_segment_samples = int(max_segment_seconds * SAMPLE_RATE)
        self.max_segment_seconds = max_segment_seconds
        self._model: Any = None
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        get_vad_model = _faster_whisper_vad().get_vad_model
        if self._model is None:
            self._model = get_vad_model()

    def load_or_record(self) -> None:
        """Load at start-up; a failure is kept for /health/ready."""
        try:
            self.load()
        except Exception as error:
            self.error = f"voice activity detection could not load: {error!r}"

    def split(self, audio: AudioArray) -> list[Span]:
        """Sample spans of speech, in order, each at most ``max_segment_seconds`` long."""
        vad = _faster_whisper_vad()
        self.load()
        options = vad.VadOptions(
            threshold=THRESHOLD,
            min_speech_duration_ms=MIN_SPEECH_MS,
            min_silence_duration_ms=MIN_SILENCE_MS,
            speech_pad_ms=SPEECH_PAD_MS,
            max_speech_duration_s=self.max_segment_seconds,
        )
        regions = vad.get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
        return merge_spans(
            [(int(r["start"]), int(r["end"])) for r in regions], self.max_segment_samples
        )


def merge_spans(spans: list[Span], max_samples: int) -> list[Span]:
    """Join consecutive spans while the joined span stays within ``max_samples``."""
    merged: list[Span] = []
    for start, end in spans:
        if merged and end - merged[-1][0] <= max_samples:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged

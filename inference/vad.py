"""Cutting long audio into speech spans with silero-vad (its weights ship in its package).

Spans are merged up to ``max_segment_seconds`` so the engine gets few, well-filled items; a
single stretch of speech longer than that is cut by silero at its quietest point.
"""

from __future__ import annotations

import threading
from typing import Any

from inference.audio import SAMPLE_RATE, AudioArray

Span = tuple[int, int]


class VadSegmenter:
    def __init__(self, max_segment_seconds: float = 20.0) -> None:
        self.max_segment_samples = int(max_segment_seconds * SAMPLE_RATE)
        self.max_segment_seconds = max_segment_seconds
        self._model: Any = None
        self.error: str | None = None
        # silero's TorchScript model keeps state between calls: one caller at a time.
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        from silero_vad import load_silero_vad

        with self._lock:
            if self._model is None:
                self._model = load_silero_vad()

    def load_or_record(self) -> None:
        """Load at start-up (importing torch takes seconds); a failure is kept for /health/ready."""
        try:
            self.load()
        except Exception as error:
            self.error = f"voice activity detection could not load: {error!r}"

    def split(self, audio: AudioArray) -> list[Span]:
        """Sample spans of speech, in order, each at most ``max_segment_seconds`` long."""
        import torch
        from silero_vad import get_speech_timestamps

        self.load()
        with self._lock:
            regions = get_speech_timestamps(
                torch.from_numpy(audio),
                self._model,
                sampling_rate=SAMPLE_RATE,
                max_speech_duration_s=self.max_segment_seconds,
            )
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

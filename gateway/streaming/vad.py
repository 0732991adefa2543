"""Server VAD for live audio: speech is a 20 ms frame whose loudness passes a threshold, a turn
ends after a run of quiet frames. Energy, not a model: the gateway installs without torch or
onnxruntime, and what a turn contains is decided again by the node's own VAD and model."""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from enum import Enum

FRAME_MS = 20
# OpenAI's server_vad threshold is 0-1 (0.5 by default); here it scales a frame's RMS, as a
# fraction of full scale: 0.5 → 0.02 (about -34 dBFS), quiet speech passes, room noise not.
THRESHOLD_TO_RMS = 0.04


class Turn(Enum):
    started = "started"
    stopped = "stopped"


@dataclass(frozen=True)
class TurnEvent:
    kind: Turn
    at_ms: int  # audio time since the session's first sample


class EnergyVad:
    """Turns in 16-bit mono PCM fed in pieces of any size."""

    def __init__(
        self,
        sample_rate: int,
        *,
        threshold: float,
        silence_duration_ms: int,
        prefix_padding_ms: int,
    ) -> None:
        self.frame_bytes = sample_rate * FRAME_MS // 1000 * 2
        self.rms_threshold = threshold * THRESHOLD_TO_RMS * 32768
        self.silence_duration_ms = silence_duration_ms
        self.prefix_padding_ms = prefix_padding_ms
        self.speaking = False
        self.quiet_ms = 0
        self.position_ms = 0
        self._pending = b""

    def feed(self, pcm: bytes) -> list[TurnEvent]:
        """The turn changes inside ``pcm``, in order."""
        data = self._pending + pcm
        whole = len(data) - len(data) % self.frame_bytes
        self._pending = data[whole:]
        events: list[TurnEvent] = []
        for start in range(0, whole, self.frame_bytes):
            loud = self._rms(data[start : start + self.frame_bytes]) >= self.rms_threshold
            self.position_ms += FRAME_MS
            if loud and not self.speaking:
                self.speaking, self.quiet_ms = True, 0
                began = max(0, self.position_ms - FRAME_MS - self.prefix_padding_ms)
                events.append(TurnEvent(Turn.started, began))
            elif self.speaking and loud:
                self.quiet_ms = 0
            elif self.speaking:
                self.quiet_ms += FRAME_MS
                if self.quiet_ms >= self.silence_duration_ms:
                    self.speaking = False
                    events.append(TurnEvent(Turn.stopped, self.position_ms))
        return events

    def reset(self) -> None:
        self.speaking, self.quiet_ms = False, 0

    @staticmethod
    def _rms(frame: bytes) -> float:
        samples = array("h", frame)
        return math.sqrt(sum(sample * sample for sample in samples) / max(1, len(samples)))

"""The interface every engine implements.

An engine instance is owned by exactly one inference thread (see ``inference.host``): FunASR's
``generate()`` and PocketSphinx's decoder are not thread-safe, so nothing here locks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from inference.audio import SAMPLE_RATE, AudioArray
from inference.errors import LiveUnsupported, UnsupportedLanguage
from inference.protocol import ModelInfo, Segment, TranscribeParams


@dataclass(frozen=True)
class EngineOutput:
    text: str
    language: str
    segments: list[Segment]


class Engine(ABC):
    """One loaded model."""

    engine_name: str = ""
    # Engines that pad every item to one fixed window (Whisper: 30 s) pay the same for a short
    # item as for a long one, so the batcher need not group items by length for them.
    fixed_window_seconds: float | None = None

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    @abstractmethod
    def info(self) -> ModelInfo:
        """What the model can do (languages, timestamps, hotwords)."""

    @abstractmethod
    def load(self) -> None:
        """Load weights; raise ``ModelLoadError`` with an actionable message on failure."""

    def close(self) -> None:  # noqa: B027  (a hook: most engines hold nothing to release)
        """Release what ``load`` acquired (worker processes, GPU memory)."""

    @abstractmethod
    def transcribe(self, audio: AudioArray, params: TranscribeParams) -> EngineOutput:
        """Recognize 16 kHz mono float32 audio."""

    def transcribe_batch(
        self, audios: list[AudioArray], params: TranscribeParams
    ) -> list[EngineOutput | Exception]:
        """Outputs in input order; a failing item yields its exception and fails alone.
        Engines that can batch override this; the default runs the items one by one."""
        outcomes: list[EngineOutput | Exception] = []
        for audio in audios:
            try:
                outcomes.append(self.transcribe(audio, params))
            except Exception as error:
                outcomes.append(error)
        return outcomes

    def warm_up(self) -> None:
        """Run a short single and a padded batch inference, so the first customer request pays
        no lazy set-up (kernel selection, allocator growth)."""
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32)
        params = TranscribeParams(model=self.model_id)
        self.transcribe(noise, params)
        for outcome in self.transcribe_batch([noise, noise[: SAMPLE_RATE // 2]], params):
            if isinstance(outcome, Exception):
                raise outcome

    def start_live(self, params: TranscribeParams) -> object:  # noqa: ARG002  (a hook)
        """The decoding state of one live stream (online models only); ``decode_live`` feeds it
        audio in arrival order."""
        raise LiveUnsupported(
            f"Model '{self.model_id}' is not an online model; live decoding needs one such as "
            "paraformer-zh-streaming."
        )

    def decode_live(self, state: object, audio: AudioArray, *, is_final: bool) -> str:
        """The text decoded from ``audio``, the stream's next piece (``is_final``: its last);
        the texts of a stream, joined, are its transcript whatever sizes the pieces had."""
        del state, audio, is_final  # a hook: only online models decode live
        raise LiveUnsupported(f"Model '{self.model_id}' is not an online model.")

    def resolve_language(self, requested: str | None) -> str:
        """The language to decode in; 'auto' picks the model's own choice."""
        languages = self.info().languages
        if not requested or requested == "auto":
            return languages[0] if len(languages) == 1 else "auto"
        base = requested.lower().split("-")[0].split("_")[0]
        if "auto" in languages or base in languages:
            return base
        raise UnsupportedLanguage(
            f"Model '{self.model_id}' does not support language '{requested}'; "
            f"it supports: {', '.join(languages)}."
        )


class BatchingEngine(Engine):
    """An engine that decodes in batches: one item is a batch of one."""

    def transcribe(self, audio: AudioArray, params: TranscribeParams) -> EngineOutput:
        outcome = self.transcribe_batch([audio], params)[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @abstractmethod
    def transcribe_batch(
        self, audios: list[AudioArray], params: TranscribeParams
    ) -> list[EngineOutput | Exception]:
        """Outputs in input order; a failing item yields its exception and fails alone."""

"""PocketSphinx: English on the CPU, with its acoustic and language model inside the wheel.

The reason it exists here: the whole product runs end to end with real transcripts on a machine
with no GPU and no model hub.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from inference.audio import AudioArray, duration_seconds, to_pcm16
from inference.engines import pocketsphinx_worker
from inference.engines.base import Engine, EngineOutput
from inference.errors import InferenceError, ModelLoadError
from inference.protocol import ModelInfo, Segment, TranscribeParams, Word

logger = logging.getLogger(__name__)

# A pause this long between two words starts a new segment (subtitle cue).
SEGMENT_PAUSE_SECONDS = 0.5
SEGMENT_MAX_SECONDS = 10.0
# Less than one 10 ms frame holds no speech; the decoder rejects it.
MIN_SAMPLES = 160
_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")


class PocketSphinxEngine(Engine):
    engine_name = "pocketsphinx"

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self._worker: ProcessPoolExecutor | None = None
        self._frame_rate = 100

    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self.model_id,
            engine=self.engine_name,
            languages=["en"],
            timestamps=True,
            word_timestamps=True,
            hotwords=False,
            loaded=self._worker is not None,
        )

    def _start_worker(self) -> ProcessPoolExecutor:
        # spawn, not fork: the node is multi-threaded, and a forked copy of its locks is unsafe.
        worker = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=pocketsphinx_worker.initialize,
            initargs=(os.getpid(),),
        )
        self._frame_rate = worker.submit(pocketsphinx_worker.frame_rate).result(timeout=120)
        return worker

    def load(self) -> None:
        if importlib.util.find_spec("pocketsphinx") is None:
            raise ModelLoadError(
                f"Model '{self.model_id}' needs the pocketsphinx package: "
                "install the node extra (pip install 'asr-billing-gateway[node]')."
            )
        try:
            self._worker = self._start_worker()
        except (BrokenProcessPool, RuntimeError, ValueError, TimeoutError) as error:
            raise ModelLoadError(
                f"Could not load PocketSphinx model '{self.model_id}' ({error!r})."
            ) from error

    def close(self) -> None:
        if self._worker is not None:
            # Wait: the worker is idle (only the closing thread ever submits to it), and a node
            # that exits without joining it leaves the decoder process orphaned.
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None

    def transcribe(self, audio: AudioArray, params: TranscribeParams) -> EngineOutput:
        if self._worker is None:
            raise ModelLoadError(f"Model '{self.model_id}' is not loaded.")
        language = self.resolve_language(params.language)
        if audio.size < MIN_SAMPLES:
            return EngineOutput(text="", language=language, segments=[])
        try:
            frames = self._worker.submit(pocketsphinx_worker.decode, to_pcm16(audio)).result()
        except BrokenProcessPool:
            # The decoder process died (killed, out of memory): start a new one for the next
            # request; this one fails.
            logger.error("the PocketSphinx worker of %s died; restarting it", self.model_id)
            self._worker = self._start_worker()
            raise InferenceError("The speech decoder crashed on this audio.") from None
        words = [
            Word(
                word=_ALTERNATE_PRONUNCIATION.sub("", word),
                start=round(first / self._frame_rate, 3),
                end=round((last + 1) / self._frame_rate, 3),
            )
            for word, first, last in frames
            if not _is_filler(word)
        ]
        segments = group_words(words, duration_seconds(audio), params.word_timestamps)
        text = " ".join(word.word for word in words)
        return EngineOutput(text=text, language=language, segments=segments)


def _is_filler(token: str) -> bool:
    return token.startswith(("<", "[", "+")) or not token.strip()


def group_words(words: list[Word], duration: float, keep_words: bool) -> list[Segment]:
    """Split a word sequence into segments at pauses, capped in length."""
    groups: list[list[Word]] = []
    for word in words:
        current = groups[-1] if groups else None
        if (
            current is None
            or word.start - current[-1].end >= SEGMENT_PAUSE_SECONDS
            or word.end - current[0].start > SEGMENT_MAX_SECONDS
        ):
            groups.append([word])
        else:
            current.append(word)
    return [
        Segment(
            start=group[0].start,
            end=min(group[-1].end, duration) if duration else group[-1].end,
            text=" ".join(word.word for word in group),
            words=list(group) if keep_words else None,
        )
        for group in groups
    ]

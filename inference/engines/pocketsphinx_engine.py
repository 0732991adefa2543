"""PocketSphinx: English on the CPU, with its acoustic and language model inside the wheel.

The reason it exists here: the whole product runs end to end with real transcripts on a machine
with no GPU and no model hub.
"""

from __future__ import annotations

import re
from typing import Any

from inference.audio import AudioArray, duration_seconds, to_pcm16
from inference.engines.base import Engine, EngineOutput
from inference.errors import ModelLoadError
from inference.protocol import ModelInfo, Segment, TranscribeParams, Word

# A pause this long between two words starts a new segment (subtitle cue).
SEGMENT_PAUSE_SECONDS = 0.5
SEGMENT_MAX_SECONDS = 10.0
_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")


class PocketSphinxEngine(Engine):
    engine_name = "pocketsphinx"

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self._decoder: Any = None
        self._frame_rate = 100

    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self.model_id,
            engine=self.engine_name,
            languages=["en"],
            timestamps=True,
            word_timestamps=True,
            hotwords=False,
            loaded=self._decoder is not None,
        )

    def load(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as error:
            raise ModelLoadError(
                f"Model '{self.model_id}' needs the pocketsphinx package: "
                "install the node extra (pip install 'asr-billing-gateway[node]')."
            ) from error
        try:
            # The default acoustic model, language model and dictionary ship in the wheel.
            self._decoder = Decoder(samprate=16000, loglevel="FATAL")
        except (RuntimeError, ValueError) as error:
            raise ModelLoadError(
                f"Could not load PocketSphinx model '{self.model_id}' ({error})."
            ) from error
        self._frame_rate = int(self._decoder.config["frate"])

    def transcribe(self, audio: AudioArray, params: TranscribeParams) -> EngineOutput:
        decoder = self._decoder
        if decoder is None:
            raise ModelLoadError(f"Model '{self.model_id}' is not loaded.")
        language = self.resolve_language(params.language)
        decoder.start_utt()
        decoder.process_raw(to_pcm16(audio), no_search=False, full_utt=True)
        decoder.end_utt()
        words = [
            Word(
                word=_ALTERNATE_PRONUNCIATION.sub("", segment.word),
                start=round(segment.start_frame / self._frame_rate, 3),
                end=round((segment.end_frame + 1) / self._frame_rate, 3),
            )
            for segment in decoder.seg()
            if not _is_filler(segment.word)
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

"""FunASR: any ``AutoModel`` model (Paraformer, SenseVoice, Whisper, …) by hub name or directory.

A local directory holds ``config.yaml``, ``model.pt`` and ``tokens.json`` (or ``tokens.txt``),
as FunASR exports it. An online model (``ParaformerStreaming``, e.g. paraformer-zh-streaming)
also decodes live audio piece by piece, its state kept per stream in FunASR's ``cache``.

A hub name (``paraformer-zh``) is downloaded by FunASR on first load; a host that cannot reach
the hub gets a message naming the model and how to give a directory.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.audio import SAMPLE_RATE, AudioArray, duration_seconds
from inference.engines.base import BatchingEngine, EngineOutput
from inference.errors import InferenceError, ModelLoadError
from inference.memory import free_cuda_cache, is_cuda_oom
from inference.protocol import ModelInfo, Segment, TranscribeParams, Word

logger = logging.getLogger(__name__)

# Capabilities of the well-known hub models; anything else is assumed multilingual ("auto").
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "paraformer-zh": {"languages": ["zh"], "hotwords": True, "timestamps": True},
    "paraformer-en": {"languages": ["en"], "hotwords": False, "timestamps": True},
    "paraformer-zh-streaming": {"languages": ["zh"], "hotwords": False, "timestamps": False},
    "SenseVoiceSmall": {
        "languages": ["auto", "zh", "en", "yue", "ja", "ko"],
        "hotwords": False,
        "timestamps": False,
    },
}


# FunASR's online ASR model classes: they decode 600 ms chunks with look-back into earlier ones.
ONLINE_MODEL_CLASSES = frozenset({"ParaformerStreaming"})
# paraformer-zh-streaming's chunking as FunASR's own server runs it: 600 ms chunks with 300 ms
# of look-ahead; the encoder looks back 4 chunks, the decoder 1.
ONLINE_OPTIONS: dict[str, Any] = {
    "chunk_size": [0, 10, 5],
    "encoder_chunk_look_back": 4,
    "decoder_chunk_look_back": 1,
}


@dataclass
class LiveState:
    """One live stream's FunASR cache: the audio and features carried from piece to piece."""

    cache: dict[str, Any] = field(default_factory=dict)


def looks_like_directory(source: str) -> bool:
    return source.startswith((".", "/", "~")) or (os.sep in source and Path(source).exists())


class FunASREngine(BatchingEngine):
    engine_name = "funasr"

    def __init__(
        self,
        model_id: str,
        source: str | None = None,
        *,
        device: str = "auto",
        hub: str = "ms",
        threads: int = 0,
    ) -> None:
        super().__init__(model_id)
        self.source = source or model_id
        self.device = device
        self.hub = hub
        # FunASR's default of 4 threads oversubscribes small machines; one per core by default.
        self.threads = threads or os.cpu_count() or 1
        self._model: Any = None
        self.online = False  # known once loaded: the model's class decides
        self._capabilities = KNOWN_MODELS.get(
            model_id, {"languages": ["auto"], "hotwords": True, "timestamps": True}
        )

    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self.model_id,
            engine=self.engine_name,
            languages=list(self._capabilities["languages"]),
            timestamps=bool(self._capabilities["timestamps"]) and not self.online,
            word_timestamps=bool(self._capabilities["timestamps"]) and not self.online,
            hotwords=bool(self._capabilities["hotwords"]) and not self.online,
            streaming=self.online,
            loaded=self._model is not None,
        )

    def _resolve_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"

    def load(self) -> None:
        try:
            from funasr import AutoModel
        except ImportError as error:
            raise ModelLoadError(
                f"Model '{self.model_id}' needs FunASR and torch: install the funasr extra "
                "(pip install 'asr-billing-gateway[node,funasr]')."
            ) from error
        is_directory = looks_like_directory(self.source)
        if is_directory:
            directory = Path(self.source).expanduser()
            if not (directory / "config.yaml").is_file() or not (directory / "model.pt").is_file():
                raise ModelLoadError(
                    f"FunASR model directory '{directory}' for model '{self.model_id}' must "
                    "contain config.yaml and model.pt (and tokens.json or tokens.txt)."
                )
            source = str(directory)
        else:
            source = self.source
        started = time.perf_counter()
        try:
            self._model = AutoModel(
                model=source,
                device=self._resolve_device(),
                hub=self.hub,
                disable_update=True,
                disable_pbar=True,
                disable_log=True,
                ncpu=self.threads,
            )
        except Exception as error:
            if is_directory:
                raise ModelLoadError(
                    f"FunASR could not load model '{self.model_id}' from '{source}': {error}"
                ) from error
            # FunASR logs the download failure and goes on to fail on the missing config; the
            # first line of what it raises is enough, the rest is its registry dump.
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ModelLoadError(
                f"FunASR could not load model '{self.model_id}' from the model hub "
                f"('{source}' on hub '{self.hub}'): the download failed or the name is unknown "
                f"({reason}). If this host cannot reach the hub, download the model where it "
                "can and point the node at the directory: "
                f"INFERENCE_MODELS={self.model_id}=/path/to/model-dir"
            ) from error
        switch_off_dither(self._model)
        self.online = type(self._model.model).__name__ in ONLINE_MODEL_CLASSES
        logger.info("loaded FunASR model %s in %.1fs", self.model_id, time.perf_counter() - started)

    def transcribe_batch(
        self, audios: list[AudioArray], params: TranscribeParams
    ) -> list[EngineOutput | Exception]:
        """One ``generate()`` call for the whole batch. FunASR forces ``batch_size=1`` on CPU
        unless it is passed per call, so it is. If the batched call fails, the items are retried
        one by one so that only the bad one fails; on CUDA out-of-memory the batch is halved."""
        if self._model is None:
            raise ModelLoadError(f"Model '{self.model_id}' is not loaded.")
        language = self.resolve_language(params.language)
        try:
            results = self._generate(audios, params, language)
        except Exception as error:
            if len(audios) == 1:
                if is_cuda_oom(error):
                    free_cuda_cache()
                    return [InferenceError("The GPU ran out of memory on this audio.")]
                return [error]
            if is_cuda_oom(error):
                free_cuda_cache()
            logger.warning("batched generate() of %d failed (%r); splitting", len(audios), error)
            middle = len(audios) // 2
            return self.transcribe_batch(audios[:middle], params) + self.transcribe_batch(
                audios[middle:], params
            )
        outcomes: list[EngineOutput | Exception] = []
        for audio, result in zip(audios, results, strict=True):
            text = str(result.get("text", "")).strip()
            segments = segments_from_result(
                result, text, duration_seconds(audio), params.word_timestamps
            )
            detected = str(result.get("language") or language)
            outcomes.append(EngineOutput(text=text, language=detected, segments=segments))
        return outcomes

    def warm_up(self) -> None:
        super().warm_up()
        if self.online:
            state = self.start_live(TranscribeParams(model=self.model_id))
            silence = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
            self.decode_live(state, silence, is_final=False)
            self.decode_live(state, silence, is_final=True)

    def start_live(self, params: TranscribeParams) -> LiveState:
        if not self.online:
            return super().start_live(params)  # type: ignore[return-value]
        self.resolve_language(params.language)
        return LiveState()

    def decode_live(self, state: object, audio: AudioArray, *, is_final: bool) -> str:
        if not isinstance(state, LiveState):
            return super().decode_live(state, audio, is_final=is_final)
        # FunASR keeps what does not fill a chunk in the cache, so the pieces may have any size.
        results = self._model.generate(
            input=audio, cache=state.cache, is_final=is_final, disable_pbar=True, **ONLINE_OPTIONS
        )
        return str(results[0].get("text", "")) if results else ""

    def _generate(
        self, audios: list[AudioArray], params: TranscribeParams, language: str
    ) -> list[dict[str, Any]]:
        if self.online:
            # An online model decodes one stream at a time: a whole file is one final stream.
            return [
                self._model.generate(
                    input=audio, cache={}, is_final=True, disable_pbar=True, **ONLINE_OPTIONS
                )[0]
                for audio in audios
            ]
        options: dict[str, Any] = {
            "batch_size": len(audios),
            "disable_pbar": True,
            "use_itn": params.itn,
        }
        if params.hotwords and self._capabilities["hotwords"]:
            options["hotword"] = params.hotwords
        if language != "auto":
            options["language"] = language
        results = self._model.generate(input=list(audios), **options)
        if len(results) != len(audios):
            raise InferenceError(
                f"generate() returned {len(results)} results for {len(audios)} inputs"
            )
        return list(results)


def switch_off_dither(model: Any) -> None:
    """FunASR's fbank front end adds random dither (amplitude 1.0 unless a model's config says
    otherwise) on every call, so the same audio came back as different text from one request
    to the next. Dither is a training-time regularizer; inference runs without it. AutoModel
    restores its configuration from a snapshot before every generate(), so the snapshot's front
    ends are switched off too."""
    configurations = [model.kwargs, getattr(model, "vad_kwargs", None)]
    configurations += list((getattr(model, "_base_kwargs_map", None) or {}).values())
    for kwargs in configurations:
        frontend = kwargs.get("frontend") if isinstance(kwargs, dict) else None
        if frontend is not None and hasattr(frontend, "dither"):
            frontend.dither = 0.0


def segments_from_result(
    result: dict[str, Any], text: str, duration: float, keep_words: bool
) -> list[Segment]:
    """Canonical segments from a FunASR result: sentences when VAD/punctuation gave them,
    token timestamps as words when present, else one segment spanning the audio."""
    sentences = result.get("sentence_info")
    if sentences:
        return [
            Segment(
                start=round(sentence["start"] / 1000, 3),
                end=round(sentence["end"] / 1000, 3),
                text=str(sentence.get("text", "")).strip(),
            )
            for sentence in sentences
        ]
    if not text:
        return []
    words: list[Word] | None = None
    timestamps = result.get("timestamp")
    tokens = text.split() if " " in text else list(text)
    if keep_words and timestamps and len(timestamps) == len(tokens):
        words = [
            Word(word=token, start=round(start / 1000, 3), end=round(end / 1000, 3))
            for token, (start, end) in zip(tokens, timestamps, strict=True)
        ]
    return [Segment(start=0.0, end=duration, text=text, words=words)]

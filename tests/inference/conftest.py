from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from inference.audio import SAMPLE_RATE, decode_audio
from inference.modelgen import build_random_paraformer
from tests.fixtures.audio import speak

SENTENCES = [
    "the weather is nice today",
    "please call me tomorrow morning",
    "good morning everyone",
    "one two three four five",
    "hello world",
    "the train leaves at seven",
    "my favourite colour is green",
    "we need more coffee",
    "open the window please",
    "the meeting starts at noon",
    "turn left at the next corner",
    "she sells sea shells",
    "bring an umbrella tonight",
    "the quick brown fox jumps over the lazy dog",
    "this sentence is rather long and it keeps going for quite a while",
    "yes",
]


@pytest.fixture(scope="session")
def paraformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Paraformer model directory, built with FunASR's classes."""
    return build_random_paraformer(tmp_path_factory.mktemp("models") / "tiny-paraformer")


@pytest.fixture(scope="session")
def sentence_clips(speech_dir: Path) -> list[bytes]:
    """Sixteen different spoken sentences (WAV bytes)."""
    return [
        speak(text, speech_dir / f"sentence-{index}.wav").read_bytes()
        for index, text in enumerate(SENTENCES)
    ]


def write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as output:
        output.setnchannels(1)
        output.setsampwidth(2)
        output.setframerate(SAMPLE_RATE)
        output.writeframes(pcm.tobytes())
    return path


def long_speech(clips: list[bytes], seconds: float, path: Path) -> Path:
    """Sentences separated by 0.8 s pauses, repeated until ``seconds`` of audio."""
    pause = np.zeros(int(0.8 * SAMPLE_RATE), dtype=np.float32)
    pieces: list[np.ndarray] = []
    total = 0
    index = 0
    while total < seconds * SAMPLE_RATE:
        clip = decode_audio(clips[index % len(clips)])
        pieces += [clip, pause]
        total += clip.size + pause.size
        index += 1
    return write_wav(path, np.concatenate(pieces)[: int(seconds * SAMPLE_RATE)])


@pytest.fixture(scope="session")
def ten_minutes_wav(sentence_clips: list[bytes], speech_dir: Path) -> Path:
    return long_speech(sentence_clips, 600, speech_dir / "ten-minutes.wav")


@pytest.fixture(scope="session")
def forty_seconds_wav(sentence_clips: list[bytes], speech_dir: Path) -> Path:
    return long_speech(sentence_clips, 40, speech_dir / "forty-seconds.wav")

"""Real recorded English speech with reference transcripts, from a package registry.

The PocketSphinx source distribution on PyPI (``pocketsphinx==5.1.1``, BSD-2-Clause, Carnegie
Mellon University) carries the recordings of its own regression tests:

- ``test/data/librivox``: five utterances of LibriVox's public-domain recording of Jane Austen's
  *Sense and Sensibility*, chapter 1, read by a volunteer (16 kHz, 37 s in all);
- ``test/data/cards``: five recordings of playing-card names ("eight of spades four of clubs
  seven of hearts");
- ``test/data/goforward.raw``: "go forward ten meters" (16 kHz, 16-bit raw PCM).

``pip download`` fetches the sdist into ``var/bench/`` once; nothing else is downloaded.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "pocketsphinx==5.1.1"
SDIST = "pocketsphinx-5.1.1.tar.gz"
DATA = "pocketsphinx-5.1.1/test/data"
SAMPLE_RATE = 16_000
SOURCE = (
    "the regression-test recordings inside the PocketSphinx 5.1.1 source distribution on PyPI "
    "(BSD-2-Clause): five LibriVox utterances of *Sense and Sensibility* (public domain), five "
    'playing-card recordings and "go forward ten meters"'
)


@dataclass(frozen=True)
class Utterance:
    name: str
    audio: np.ndarray  # 16 kHz mono float32
    reference: str

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE

    def wav_bytes(self) -> bytes:
        return pcm16_wav(self.audio)


def pcm16_wav(audio: np.ndarray) -> bytes:
    """16 kHz mono float samples in [-1, 1] as a 16-bit PCM WAV file."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as output:
        output.setnchannels(1)
        output.setsampwidth(2)
        output.setframerate(SAMPLE_RATE)
        output.writeframes(pcm.tobytes())
    return buffer.getvalue()


def fetch(cache: Path) -> Path:
    """The extracted test data directory, downloading the sdist with pip on first use."""
    data = cache / DATA
    if data.is_dir():
        return data
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / SDIST
    if not archive.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                "pocketsphinx",
                DISTRIBUTION,
                "-d",
                str(cache),
            ],
            check=True,
        )
    with tarfile.open(archive) as tar:
        members = [member for member in tar.getmembers() if member.name.startswith(DATA + "/")]
        tar.extractall(cache, members=members, filter="data")
    return data


def _pcm(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def _wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as source:
        assert source.getframerate() == SAMPLE_RATE
        assert source.getnchannels() == 1
        return _pcm(source.readframes(source.getnframes()))


_TRANSCRIPT_LINE = re.compile(r"<s>(.*)</s>\s*\((\S+)\)")


def _transcripts(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = _TRANSCRIPT_LINE.search(line)
        if match:
            found[match.group(2)] = " ".join(match.group(1).split())
    return found


def english_utterances(cache: Path | None = None) -> list[Utterance]:
    data = fetch(cache or ROOT / "var" / "bench" / "speech")
    utterances = []
    for folder in ("librivox", "cards"):
        references = _transcripts(
            data / folder / ("transcription" if folder == "librivox" else "cards.transcription")
        )
        for name, reference in sorted(references.items()):
            utterances.append(
                Utterance(f"{folder}/{name}", _wav(data / folder / f"{name}.wav"), reference)
            )
    goforward = _pcm((data / "goforward.raw").read_bytes())
    utterances.append(Utterance("goforward", goforward, "go forward ten meters"))
    return utterances

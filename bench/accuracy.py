"""Accuracy: word error rate per engine on real recorded English speech, with ×realtime.

The recordings and their reference transcripts come from a package registry (see
``bench/speech_data.py``: the regression-test audio in PocketSphinx's PyPI source distribution).
Each engine is loaded as the node loads it (``build_engine`` with default node settings) and
decodes every utterance alone, after one warm-up. Hypothesis and reference are normalized the
same way before scoring: lower case, punctuation removed, hyphens split, numbers 0-20 and "mr"
spelled out. WER = (substitutions + deletions + insertions) / reference words, over the set.

Chinese CER needs a trained Chinese model (paraformer-zh, SenseVoice); none can be fetched on a
host without a model hub, and a random-weight model has no accuracy to measure.

    python bench/accuracy.py                                   # whisper-tiny.en and pocketsphinx-en
    python bench/accuracy.py --models whisper-tiny.en --no-write
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from speech_data import SOURCE, Utterance, english_utterances  # noqa: E402

from bench.record import record  # noqa: E402
from inference.config import InferenceSettings  # noqa: E402
from inference.engines.registry import build_engine, parse_model_specs  # noqa: E402
from inference.protocol import TranscribeParams  # noqa: E402

NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
SPELLED = {str(value): word for value, word in enumerate(NUMBERS)} | {"mr": "mister"}


def normalize(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return [SPELLED.get(word, word) for word in text.split() if word.strip("'")]


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
            )
        previous = current
    return previous[-1]


# Read speech (the LibriVox book) is what the target is about; the card names and the robot
# command are PocketSphinx's own regression set, short and closed-vocabulary.
SETS = {
    "read speech (LibriVox)": ("librivox/",),
    "commands (cards, go forward)": ("cards/", "goforward"),
    "all": ("",),
}


@dataclass
class Decode:
    name: str
    reference: str
    heard: str
    errors: int
    words: int
    audio_seconds: float
    decode_seconds: float


@dataclass
class EngineScore:
    model: str
    engine: str
    decodes: list[Decode]

    def subset(self, prefixes: tuple[str, ...]) -> list[Decode]:
        return [d for d in self.decodes if d.name.startswith(prefixes)]


def score(model: str, utterances: list[Utterance], threads: int) -> EngineScore:
    (spec,) = parse_model_specs(model)
    engine = build_engine(spec, InferenceSettings(threads=threads))
    engine.load()
    engine.warm_up()
    params = TranscribeParams(model=model)
    decodes = []
    for utterance in utterances:
        started = time.perf_counter()
        output = engine.transcribe(utterance.audio, params)
        elapsed = time.perf_counter() - started
        reference, hypothesis = normalize(utterance.reference), normalize(output.text)
        decodes.append(
            Decode(
                utterance.name,
                utterance.reference,
                output.text,
                edit_distance(reference, hypothesis),
                len(reference),
                utterance.seconds,
                elapsed,
            )
        )
        print(f"  {model:>16}  {utterance.name:<52} {output.text}", flush=True)
    engine.close()
    return EngineScore(model, spec.engine, decodes)


def table(scores: list[EngineScore]) -> str:
    lines = [
        "| set | model | engine | words | errors | WER | audio s | decode s | ×realtime |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, prefixes in SETS.items():
        for s in scores:
            part = s.subset(prefixes)
            words, errors = sum(d.words for d in part), sum(d.errors for d in part)
            audio, decode = sum(d.audio_seconds for d in part), sum(d.decode_seconds for d in part)
            lines.append(
                f"| {label} | {s.model} | {s.engine} | {words} | {errors} | {errors / words:.1%} "
                f"| {audio:.1f} | {decode:.1f} | {audio / decode:.1f} |"
            )
    return "\n".join(lines)


def examples(scores: list[EngineScore]) -> str:
    lines = ["| utterance | reference | " + " | ".join(s.model for s in scores) + " |"]
    lines.append("|---" * (len(scores) + 2) + "|")
    for index, first in enumerate(scores[0].decodes):
        heard = " | ".join(s.decodes[index].heard for s in scores)
        lines.append(f"| {first.name} | {first.reference} | {heard} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="whisper-tiny.en,pocketsphinx-en")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per model (0: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    options = parser.parse_args()

    utterances = english_utterances()
    scores = [score(model, utterances, options.threads) for model in options.models.split(",")]
    report = (
        f"### Accuracy, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"Device: {os.cpu_count()} x {platform.machine()} CPU (load average "
        f"{os.getloadavg()[0]:.1f} at the end). Command: "
        f"`python bench/accuracy.py {' '.join(sys.argv[1:])}`. Data: {SOURCE}; "
        f"{len(utterances)} utterances, {sum(u.seconds for u in utterances):.1f} s.\n\n"
        f"{table(scores)}\n\nWhat each engine heard:\n\n{examples(scores)}\n"
    )
    print()
    print(report)
    if not options.no_write:
        record(options.out, "Accuracy", report)


if __name__ == "__main__":
    main()

"""whisper-asr-webservice's output formats, rendered from the canonical result."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from gateway.formats import LANGUAGE_NAMES, cues, render_srt, render_vtt
from inference.protocol import TranscriptionResult


class AsrOutput(StrEnum):
    txt = "txt"
    json = "json"
    srt = "srt"
    vtt = "vtt"
    tsv = "tsv"


def render_txt(result: TranscriptionResult) -> str:
    """One line per segment, as whisper writes .txt files."""
    return "".join(f"{cue.text.strip()}\n" for cue in cues(result))


def render_tsv(result: TranscriptionResult) -> str:
    """``start<TAB>end<TAB>text`` with integer milliseconds, under a header line."""
    lines = ["start\tend\ttext\n"]
    for cue in cues(result):
        text = cue.text.strip().replace("\t", " ")
        lines.append(f"{round(cue.start * 1000)}\t{round(cue.end * 1000)}\t{text}\n")
    return "".join(lines)


def render_whisper_json(result: TranscriptionResult) -> dict[str, Any]:
    """whisper's result dictionary: text, segments (with words when asked) and language."""
    segments: list[dict[str, Any]] = []
    for index, segment in enumerate(result.segments):
        item: dict[str, Any] = {
            "id": index,
            "start": segment.start,
            "end": segment.end,
            "text": segment.text,
        }
        if segment.words is not None:
            item["words"] = [
                {"word": word.word, "start": word.start, "end": word.end} for word in segment.words
            ]
        segments.append(item)
    return {"text": result.text, "segments": segments, "language": result.language}


def render_asr(result: TranscriptionResult, output: AsrOutput) -> str | dict[str, Any]:
    if output is AsrOutput.json:
        return render_whisper_json(result)
    if output is AsrOutput.srt:
        return render_srt(result)
    if output is AsrOutput.vtt:
        return render_vtt(result)
    if output is AsrOutput.tsv:
        return render_tsv(result)
    return render_txt(result)


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)

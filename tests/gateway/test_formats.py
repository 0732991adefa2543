from __future__ import annotations

from gateway.formats import (
    ResponseFormat,
    TimestampGranularity,
    render_body,
    render_srt,
    render_vtt,
)
from inference.protocol import Segment, TranscriptionResult, Word

RESULT = TranscriptionResult(
    text="the weather is nice today please call me",
    language="en",
    duration=3725.5,
    segments=[
        Segment(
            start=0.04,
            end=1.875,
            text="the weather is nice today",
            words=[Word(word="the", start=0.04, end=0.2), Word(word="weather", start=0.2, end=0.6)],
        ),
        Segment(start=3723.0, end=3725.25, text="please call me"),
    ],
    model="pocketsphinx-en",
    processing_ms=12,
)


class TestSubtitles:
    def test_srt(self) -> None:
        assert render_srt(RESULT) == (
            "1\n00:00:00,040 --> 00:00:01,875\nthe weather is nice today\n\n"
            "2\n01:02:03,000 --> 01:02:05,250\nplease call me\n"
        )

    def test_vtt(self) -> None:
        assert render_vtt(RESULT) == (
            "WEBVTT\n\n00:00:00.040 --> 00:00:01.875\nthe weather is nice today\n\n"
            "01:02:03.000 --> 01:02:05.250\nplease call me\n"
        )

    def test_text_without_segments_is_one_cue(self) -> None:
        bare = RESULT.model_copy(update={"segments": [], "duration": 2.0})
        assert render_srt(bare).startswith("1\n00:00:00,000 --> 00:00:02,000\n")

    def test_silence_renders_no_cues(self) -> None:
        silent = RESULT.model_copy(update={"segments": [], "text": ""})
        assert render_srt(silent) == ""
        assert render_vtt(silent) == "WEBVTT\n\n"


class TestVerboseJson:
    def test_segments_by_default_words_on_request(self) -> None:
        usage = {"type": "tokens", "output_tokens": 33}
        plain = render_body(RESULT, ResponseFormat.verbose_json, set(), usage)
        assert isinstance(plain, dict)
        assert plain["language"] == "english"
        assert [segment["id"] for segment in plain["segments"]] == [0, 1]
        assert "words" not in plain
        words = render_body(RESULT, ResponseFormat.verbose_json, {TimestampGranularity.word}, usage)
        assert isinstance(words, dict)
        assert words["words"] == [
            {"word": "the", "start": 0.04, "end": 0.2},
            {"word": "weather", "start": 0.2, "end": 0.6},
        ]
        assert "segments" not in words
        assert words["usage"] == usage

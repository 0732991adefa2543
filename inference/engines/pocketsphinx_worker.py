"""The PocketSphinx decoder, run in a child process.

``Decoder.process_raw`` holds the GIL for the whole utterance (seconds on long audio), which
would freeze the node's event loop: health checks, metrics, new uploads. In its own process it
freezes nothing; the owning inference thread waits on a pipe, which releases the GIL.
"""

from __future__ import annotations

from typing import Any

_decoder: Any = None

WordFrames = tuple[str, int, int]


def initialize() -> None:
    """Runs once in the child: load the acoustic model, language model and dictionary that ship
    in the wheel. Batch CMN normalizes each utterance on its own, but the decoder keeps other
    state between utterances: the spans of a ten-minute file, decoded twice through one decoder,
    gave different words for the first span the second time. Short clips decode alike (the
    tests compare them); long transcripts are compared on freshly started nodes."""
    global _decoder
    from pocketsphinx import Decoder

    _decoder = Decoder(samprate=16000, loglevel="FATAL", cmn="batch")


def frame_rate() -> int:
    return int(_decoder.config["frate"])


def decode(pcm16: bytes) -> list[WordFrames]:
    """Words with their first and last frame, fillers included."""
    _decoder.start_utt()
    try:
        _decoder.process_raw(pcm16, no_search=False, full_utt=True)
    finally:
        # Always close the utterance: an open one would fail every later call.
        _decoder.end_utt()
    return [(segment.word, segment.start_frame, segment.end_frame) for segment in _decoder.seg()]

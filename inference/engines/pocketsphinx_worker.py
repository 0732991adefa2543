"""The PocketSphinx decoder, run in a child process.

``Decoder.process_raw`` holds the GIL for the whole utterance (seconds on long audio), which
would freeze the node's event loop: health checks, metrics, new uploads. In its own process it
freezes nothing; the owning inference thread waits on a pipe, which releases the GIL.

The child dies with the node: on Linux the kernel sends it SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``), and elsewhere a watcher thread notices that it has been orphaned.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any

_decoder: Any = None

WordFrames = tuple[str, int, int]
PR_SET_PDEATHSIG = 1
ORPHAN_POLL_SECONDS = 0.5


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(ORPHAN_POLL_SECONDS)
    os._exit(0)


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` (the node) is gone, however it ended."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent may have died before the line above took effect.
    if os.getppid() != parent_pid:
        os._exit(0)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def initialize(parent_pid: int) -> None:
    """Runs once in the child: tie its life to the node's, then load the acoustic model,
    language model and dictionary that ship in the wheel."""
    global _decoder
    die_with_parent(parent_pid)
    from pocketsphinx import Decoder

    _decoder = Decoder(samprate=16000, loglevel="FATAL", cmn="batch")


def frame_rate() -> int:
    return int(_decoder.config["frate"])


def decode(pcm16: bytes) -> list[WordFrames]:
    """Words with their first and last frame, fillers included.

    Every utterance starts from the same decoder state. Batch CMN normalizes each utterance on
    its own, but the front end's noise-floor estimate (``remove_noise``) is not reset by
    ``start_utt``: it carries over from the previous utterance, so after a long recording a
    short one was heard differently ("the weather is nice today" became "unless there is a nice
    today"). ``start_stream`` resets it; PocketSphinx marks it deprecated, but its own
    ``start_utt`` does not do the same."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _decoder.start_stream()
    _decoder.start_utt()
    try:
        _decoder.process_raw(pcm16, no_search=False, full_utt=True)
    finally:
        # Always close the utterance: an open one would fail every later call.
        _decoder.end_utt()
    return [(segment.word, segment.start_frame, segment.end_frame) for segment in _decoder.seg()]

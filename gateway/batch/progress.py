"""A one-line progress bar on stderr: files and audio minutes done, failures so far."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import TextIO

BAR_WIDTH = 24
# A terminal is redrawn at most this often; a log (not a terminal) gets a line this often.
REDRAW_SECONDS = 0.1
LOG_LINE_SECONDS = 10.0


class Progress:
    def __init__(
        self, total_files: int, total_audio_seconds: float, stream: TextIO | None = None
    ) -> None:
        self.total_files = total_files
        self.total_audio_seconds = total_audio_seconds
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.files_done = 0
        self.audio_seconds_done = 0.0
        self.failed = 0
        self.skipped = 0
        self._lock = threading.Lock()
        self._drawn_at = 0.0

    def advance(self, audio_seconds: float, *, failed: bool = False, skipped: bool = False) -> None:
        with self._lock:
            self.files_done += 1
            self.audio_seconds_done += audio_seconds
            self.failed += failed
            self.skipped += skipped
            self._draw(force=self.files_done == self.total_files)

    def line(self) -> str:
        fraction = self.files_done / self.total_files if self.total_files else 1.0
        filled = round(fraction * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return (
            f"[{bar}] {self.files_done}/{self.total_files} files · "
            f"{self.audio_seconds_done / 60:.1f}/{self.total_audio_seconds / 60:.1f} audio min · "
            f"{self.failed} failed · {self.skipped} skipped"
        )

    def start(self) -> None:
        with self._lock:
            self._draw(force=True)

    def finish(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        interval = REDRAW_SECONDS if self.interactive else LOG_LINE_SECONDS
        if not force and now - self._drawn_at < interval:
            return
        self._drawn_at = now
        if not self.interactive:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            return
        width = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r" + self.line()[: width - 1].ljust(width - 1))
        self.stream.flush()

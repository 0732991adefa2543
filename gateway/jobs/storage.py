"""Where a job's uploaded audio waits until the job ends.

One small interface, so a deployment can keep audio in a shared directory (a volume every
replica mounts) or elsewhere. Audio is written before the job row is committed and deleted
once the job has ended; ``stale_keys`` finds what a crash between those steps left behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Protocol

from gateway.config import GatewaySettings

SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


class AudioStore(Protocol):
    """Blocking calls: the service runs them on worker threads."""

    def put(self, key: str, audio: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """The stored audio; ``FileNotFoundError`` when there is none."""
        ...

    def delete(self, key: str) -> None:
        """Delete the audio; no error when it is already gone."""
        ...

    def stale_keys(self, older_than: datetime) -> list[str]:
        """Keys written before ``older_than`` (to find audio whose job never came to be)."""
        ...


class DirectoryAudioStore:
    """One file per job in a directory; written under a temporary name and renamed, so a
    reader never sees half a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        if not SAFE_KEY.match(key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.directory / f"{key}.audio"

    def put(self, key: str, audio: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self._path(key)
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".incoming-")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(audio)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def stale_keys(self, older_than: datetime) -> list[str]:
        if not self.directory.is_dir():
            return []
        cutoff = older_than.timestamp()
        keys = []
        for path in self.directory.iterdir():
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if modified >= cutoff:
                continue
            if path.name.startswith(".incoming-"):
                path.unlink(missing_ok=True)  # a write that died half-way
            elif path.suffix == ".audio":
                keys.append(path.stem)
        return keys


def build_audio_store(settings: GatewaySettings) -> AudioStore:
    """The configured store (``GATEWAY_JOB_STORAGE``)."""
    return DirectoryAudioStore(Path(settings.job_storage_dir))

"""Which files to transcribe, and where each transcript goes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# What the nodes decode (PyAV/FFmpeg); inside folders, other files are ignored. A file named
# on the command line is taken whatever its extension.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".mp3", ".m4a", ".mp4", ".webm", ".ogg", ".oga", ".opus", ".flac", ".aac", ".mka"}
)
OUTPUT_EXTENSIONS = {"txt": ".txt", "srt": ".srt", "vtt": ".vtt", "json": ".json"}


@dataclass(frozen=True)
class BatchItem:
    source: Path
    # The source's path under the folder it was found in (its name, for a file named alone).
    relative: Path
    output: Path


def find_audio(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """(file, path relative to what was named) for every audio file under ``paths``, in a
    stable order; a file reached twice is listed once."""
    found: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            for candidate in sorted(path.rglob("*")):
                if candidate.is_file() and candidate.suffix.lower() in AUDIO_EXTENSIONS:
                    found.setdefault(candidate.resolve(), candidate.relative_to(path))
        elif path.is_file():
            found.setdefault(path.resolve(), Path(path.name))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return list(found.items())


def plan(paths: Iterable[Path], out_dir: Path, output_format: str) -> list[BatchItem]:
    """One item per audio file; its transcript mirrors its place under ``out_dir`` with the
    format's extension (``talk.wav`` → ``talk.txt``; ``talk.wav.txt`` when a sibling of another
    container, ``talk.mp3``, would take the same name)."""
    extension = OUTPUT_EXTENSIONS[output_format]
    items: list[BatchItem] = []
    taken: set[Path] = set()
    for source, relative in find_audio(paths):
        output = out_dir / relative.with_suffix(extension)
        if output in taken:
            output = out_dir / relative.with_name(relative.name + extension)
        taken.add(output)
        items.append(BatchItem(source=source, relative=relative, output=output))
    return items

"""A benchmark run goes into docs/benchmarks.md under its own section, after the runs already
there, rather than at the end of the file."""

from __future__ import annotations

from pathlib import Path


def record(out: Path, section: str, report: str) -> None:
    """Put ``report`` (a ``### `` run with its table) at the end of the ``## `` section whose
    heading starts with ``section``; a section not there yet is started at the end of the file."""
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next(
        (i for i, line in enumerate(lines) if line.startswith(f"## {section}")),
        None,
    )
    block = "\n" + report.strip("\n") + "\n"
    if start is None:
        out.write_text(text.rstrip("\n") + f"\n\n## {section}\n" + block)
        return
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
        len(lines),
    )
    before = "".join(lines[:end]).rstrip("\n") + "\n"
    after = "".join(lines[end:])
    out.write_text(before + block + ("\n" + after if after else ""))

"""Benchmark runs land under their own section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

from bench.record import record

DOC = """# Benchmarks

## Gateway overhead (`bench/gateway.py`)

What it measures.

### Gateway overhead, 2026-11-01

| a |
|---|

## Accuracy (`bench/accuracy.py`)

### Accuracy, 2026-11-02
"""


def test_a_run_goes_after_the_runs_of_its_section(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(DOC)
    record(out, "Gateway overhead", "### Gateway overhead, 2026-11-30\n\n| b |\n|---|\n")
    text = out.read_text()
    assert text.index("### Gateway overhead, 2026-11-01") < text.index(
        "### Gateway overhead, 2026-11-30"
    )
    assert text.index("### Gateway overhead, 2026-11-30") < text.index("## Accuracy")
    assert "|---|\n\n### Gateway overhead, 2026-11-30\n\n| b |\n|---|\n\n## Accuracy" in text


def test_the_last_section_and_a_new_one(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(DOC)
    record(out, "Accuracy", "### Accuracy, 2026-11-30\n")
    record(out, "Money through crashes", "### Crash run, 2026-11-30\n")
    assert out.read_text() == DOC + (
        "\n### Accuracy, 2026-11-30\n\n## Money through crashes\n\n### Crash run, 2026-11-30\n"
    )


def test_a_missing_file_is_started(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    record(out, "Accuracy", "### Accuracy, 2026-11-30\n")
    assert out.read_text() == "# Benchmarks\n\n## Accuracy\n\n### Accuracy, 2026-11-30\n"

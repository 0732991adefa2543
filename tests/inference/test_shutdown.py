"""A node that stops leaves no process behind (PocketSphinx decodes in a child process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.processes import ROOT, free_port, wait_until_ready


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stopping_a_node_stops_its_decoder_process(tmp_path: Path) -> None:
    port = free_port()
    with (tmp_path / "node.log").open("wb") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "node", "--port", str(port)],
            env={**os.environ, "INFERENCE_MODELS": "pocketsphinx-en"},
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        try:
            wait_until_ready(f"http://127.0.0.1:{port}/health/ready", node)
            helpers = children_of(node.pid)
            assert helpers, "the decoder runs in a child process"
        finally:
            node.terminate()
            node.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in helpers):
        assert time.monotonic() < deadline, f"left behind: {[p for p in helpers if alive(p)]}"
        time.sleep(0.1)


def descendants_of(pid: int) -> set[int]:
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = set().union(*(children_of(parent) for parent in frontier)) - found
        found |= children
        frontier = children
    return found


def test_a_killed_node_leaves_no_decoder_process(tmp_path: Path) -> None:
    """SIGKILL gives the node no chance to stop its children: they must notice and go."""
    port = free_port()
    with (tmp_path / "node.log").open("wb") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "node", "--port", str(port)],
            env={**os.environ, "INFERENCE_MODELS": "pocketsphinx-en"},
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        try:
            wait_until_ready(f"http://127.0.0.1:{port}/health/ready", node)
            helpers = descendants_of(node.pid)
            assert helpers, "the decoder runs in a child process"
        finally:
            node.send_signal(signal.SIGKILL)
            node.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in helpers):
        assert time.monotonic() < deadline, f"orphaned: {[p for p in helpers if alive(p)]}"
        time.sleep(0.1)

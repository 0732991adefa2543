"""/health/ready stays false until every model is loaded and warmed."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference.app import create_app
from inference.config import InferenceSettings
from inference.engines.pocketsphinx_engine import PocketSphinxEngine
from tests.fixtures.processes import ASRGW, ROOT, free_port, wait_until_ready


class GatedWarmUp(PocketSphinxEngine):
    """The real PocketSphinx engine, whose warm-up waits for the test to let it finish."""

    def __init__(self) -> None:
        super().__init__("pocketsphinx-en")
        self.warming = threading.Event()
        self.release = threading.Event()

    def warm_up(self) -> None:
        self.warming.set()
        assert self.release.wait(30)
        super().warm_up()


def test_not_ready_until_warm_up_ends(weather_wav: Path) -> None:
    engine = GatedWarmUp()
    with TestClient(create_app(InferenceSettings(), engines=[engine])) as client:
        assert engine.warming.wait(30)
        loading = client.get("/health/ready")
        refused = client.post("/v1/transcribe", files={"file": ("a.wav", weather_wav.read_bytes())})
        assert client.get("/health/live").status_code == 200
        engine.release.set()
        deadline = time.monotonic() + 30
        while (ready := client.get("/health/ready")).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        served = client.post("/v1/transcribe", files={"file": ("a.wav", weather_wav.read_bytes())})
    assert loading.status_code == 503
    assert loading.json()["status"] == "loading"
    assert loading.json()["models"][0]["loaded"] is False
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "node_not_ready"
    assert "retry-after" in refused.headers
    assert ready.json()["models"][0]["loaded"] is True
    assert served.status_code == 200


def test_a_node_that_cannot_load_is_reported_with_its_error(tmp_path: Path) -> None:
    """Waiting for a node whose model cannot load ends with the node's own error, not a wait
    to the timeout: the benchmarks and the end-to-end tests say why a node never came up."""
    port = free_port()
    environment = {
        **os.environ,
        "INFERENCE_MODELS": f"broken={tmp_path / 'missing'}",
        "INFERENCE_NODE_SECRET": "",
    }
    with (tmp_path / "node.log").open("wb") as log:
        process = subprocess.Popen(
            [*ASRGW, "node", "--port", str(port)],
            env=environment,
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        try:
            with pytest.raises(RuntimeError, match=r"failed: .*broken"):
                wait_until_ready(f"http://127.0.0.1:{port}/health/ready", process, timeout=300)
        finally:
            process.terminate()
            process.wait(timeout=60)

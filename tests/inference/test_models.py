"""Several models on one node, each by name, each with its capabilities."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from inference.app import create_app
from inference.config import InferenceSettings
from tests.inference.test_node_app import wait_ready


def test_two_engines_on_one_node(paraformer_dir: Path, weather_wav: Path) -> None:
    settings = InferenceSettings(
        models=f"pocketsphinx-en,tiny-paraformer={paraformer_dir}", device="cpu"
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client, timeout=120)
        models = {model["id"]: model for model in client.get("/v1/models").json()["data"]}
        results = {
            name: client.post(
                "/v1/transcribe",
                files={"file": ("a.wav", weather_wav.read_bytes())},
                data={"model": name} if name else {},
            ).json()
            for name in ("pocketsphinx-en", "tiny-paraformer", "")
        }
    assert models["pocketsphinx-en"]["engine"] == "pocketsphinx"
    assert models["pocketsphinx-en"]["languages"] == ["en"]
    assert models["tiny-paraformer"]["engine"] == "funasr"
    assert models["tiny-paraformer"]["hotwords"] is True
    assert all(model["loaded"] for model in models.values())
    assert results["pocketsphinx-en"]["model"] == "pocketsphinx-en"
    assert "weather" in results["pocketsphinx-en"]["text"]
    assert results["tiny-paraformer"]["model"] == "tiny-paraformer"
    assert results[""]["model"] == "pocketsphinx-en"  # the first configured is the default

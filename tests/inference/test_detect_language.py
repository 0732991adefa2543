from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from inference.app import create_app
from inference.config import InferenceSettings
from tests.inference.test_node_app import wait_ready


def test_single_language_model_reports_its_language(weather_wav: Path) -> None:
    with TestClient(create_app(InferenceSettings(models="pocketsphinx-en"))) as client:
        wait_ready(client)
        response = client.post(
            "/v1/detect-language", files={"file": ("a.wav", weather_wav.read_bytes())}
        )
    assert response.status_code == 200
    assert response.json()["language"] == "en"
    assert response.json()["model"] == "pocketsphinx-en"
    assert 1 < response.json()["duration"] < 3


def test_model_without_language_id_says_so(paraformer_dir: Path, weather_wav: Path) -> None:
    settings = InferenceSettings(models=f"tiny-paraformer={paraformer_dir}", device="cpu")
    with TestClient(create_app(settings)) as client:
        wait_ready(client, timeout=120)
        response = client.post(
            "/v1/detect-language", files={"file": ("a.wav", weather_wav.read_bytes())}
        )
        bad = client.post("/v1/detect-language", files={"file": ("a.wav", b"")})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "language_detection_unsupported"
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_audio"

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference.app import create_app
from inference.config import InferenceSettings
from tests.fixtures.audio import PNG_IMAGE
from tests.fixtures.hostile_media import flac_claiming, wav_claiming

SECRET = "node-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def wait_ready(client: TestClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise TimeoutError("node not ready")


@pytest.fixture(scope="module")
def node() -> Iterator[TestClient]:
    app = create_app(InferenceSettings(models="pocketsphinx-en", node_secret=SECRET))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


class TestHealthAndModels:
    def test_live_and_ready(self, node: TestClient) -> None:
        assert node.get("/health/live").json() == {"status": "ok"}
        ready = node.get("/health/ready").json()
        assert ready["status"] == "ready"
        assert ready["models"][0]["loaded"] is True

    def test_models_list_capabilities(self, node: TestClient) -> None:
        (model,) = node.get("/v1/models", headers=AUTH).json()["data"]
        assert model["id"] == "pocketsphinx-en"
        assert model["languages"] == ["en"]
        assert model["word_timestamps"] is True

    def test_not_ready_while_a_model_fails_to_load(self, tmp_path: Path) -> None:
        settings = InferenceSettings(models=f"broken={tmp_path / 'missing'}")
        with TestClient(create_app(settings)) as client:
            app_pool = client.app.state.pool  # type: ignore[attr-defined]
            app_pool.wait_loaded(30)
            response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["status"] == "failed"
        assert "broken" in response.json()["error"]


class TestSecurityHeaders:
    def test_every_response_is_nosniff(self, node: TestClient, weather_wav: Path) -> None:
        responses = {
            "health": node.get("/health/ready"),
            "metrics": node.get("/metrics"),
            "401": node.post("/v1/transcribe"),
            "404": node.get("/no/such/path"),
        }
        with node.stream(
            "POST",
            "/v1/transcribe/stream",
            headers=AUTH,
            files={"file": ("weather.wav", weather_wav.read_bytes(), "audio/wav")},
        ) as streamed:
            lines = [json.loads(line) for line in streamed.iter_lines() if line]
        assert responses["401"].status_code == 401
        assert lines[-1]["type"] == "result"  # the streamed body passes through whole
        for what, response in {**responses, "stream": streamed}.items():
            assert response.headers["x-content-type-options"] == "nosniff", what


class TestTranscribe:
    def test_canonical_result(self, node: TestClient, weather_wav: Path) -> None:
        response = node.post(
            "/v1/transcribe",
            headers=AUTH,
            files={"file": ("weather.wav", weather_wav.read_bytes(), "audio/wav")},
            data={"word_timestamps": "true"},
        )
        assert response.status_code == 200
        result = response.json()
        assert "weather" in result["text"]
        assert result["language"] == "en"
        assert result["model"] == "pocketsphinx-en"
        assert 1.0 < result["duration"] < 3.0
        assert result["processing_ms"] >= 0
        segment = result["segments"][0]
        assert 0 <= segment["start"] < segment["end"] <= result["duration"]
        words = [word["word"] for word in segment["words"]]
        assert "weather" in words

    def test_requires_the_node_secret(self, node: TestClient) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = node.post("/v1/transcribe", headers=headers, files={"file": ("a.wav", b"x")})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"

    @pytest.mark.parametrize(
        ("kind", "message"),
        [
            ("empty", "empty"),
            ("image", "not an accepted audio or video format"),
            ("document", "not a recognized"),
            ("header-only wav", "zero duration"),
            ("truncated wav header", "not a recognized"),
        ],
    )
    def test_invalid_audio(
        self, node: TestClient, weather_wav: Path, kind: str, message: str
    ) -> None:
        data = {
            "empty": b"",
            "image": PNG_IMAGE,
            "document": b"%PDF-1.7 not audio",
            "header-only wav": weather_wav.read_bytes()[:44],
            "truncated wav header": weather_wav.read_bytes()[:20],
        }[kind]
        response = node.post("/v1/transcribe", headers=AUTH, files={"file": ("a.wav", data)})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_audio"
        assert message in response.json()["error"]["message"]

    def test_unknown_model_and_language(self, node: TestClient, weather_wav: Path) -> None:
        files = {"file": ("a.wav", weather_wav.read_bytes())}
        unknown = node.post("/v1/transcribe", headers=AUTH, files=files, data={"model": "nope"})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"
        french = node.post("/v1/transcribe", headers=AUTH, files=files, data={"language": "fr"})
        assert french.status_code == 400
        assert french.json()["error"]["code"] == "unsupported_language"

    def test_missing_file_field(self, node: TestClient) -> None:
        response = node.post("/v1/transcribe", headers=AUTH, data={"model": "pocketsphinx-en"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"


class TestStreamedTranscript:
    def test_each_stretch_of_speech_arrives_as_a_delta_then_the_result(
        self, node: TestClient, forty_seconds_wav: Path
    ) -> None:
        audio = forty_seconds_wav.read_bytes()
        whole = node.post("/v1/transcribe", headers=AUTH, files={"file": ("a.wav", audio)})
        streamed = node.post(
            "/v1/transcribe/stream", headers=AUTH, files={"file": ("a.wav", audio)}
        )
        assert streamed.status_code == 200
        assert streamed.headers["content-type"] == "application/x-ndjson"
        events = [json.loads(line) for line in streamed.text.splitlines()]
        deltas = [event["text"] for event in events if event["type"] == "delta"]
        (result,) = [event["result"] for event in events if event["type"] == "result"]
        assert events[-1]["type"] == "result"
        assert len(deltas) >= 2  # forty seconds are cut by VAD into several stretches
        assert "".join(deltas) == result["text"] == whole.json()["text"]
        assert result["segments"] == whole.json()["segments"]

    def test_bad_audio_is_refused_before_the_stream_starts(self, node: TestClient) -> None:
        response = node.post(
            "/v1/transcribe/stream", headers=AUTH, files={"file": ("a.png", PNG_IMAGE)}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_audio"

    def test_the_stream_needs_the_node_secret(self, node: TestClient, weather_wav: Path) -> None:
        response = node.post(
            "/v1/transcribe/stream", files={"file": ("a.wav", weather_wav.read_bytes())}
        )
        assert response.status_code == 401


class TestTheMostAFileMayDecodeTo:
    """``max_audio_ms``: the gateway's measured length plus its margin."""

    def test_a_file_holding_more_is_refused_as_invalid(
        self, node: TestClient, weather_wav: Path
    ) -> None:
        audio = weather_wav.read_bytes()
        for path in ("/v1/transcribe", "/v1/transcribe/stream"):
            refused = node.post(
                path, headers=AUTH, files={"file": ("a.wav", audio)}, data={"max_audio_ms": "500"}
            )
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "invalid_audio"
            assert "more audio than its packets declare" in refused.json()["error"]["message"]
        accepted = node.post(
            "/v1/transcribe",
            headers=AUTH,
            files={"file": ("a.wav", audio)},
            data={"max_audio_ms": "3000"},
        )
        assert accepted.status_code == 200
        assert "weather" in accepted.json()["text"]

    def test_language_detection_decodes_thirty_seconds_at_most(
        self, node: TestClient, silent_hour_flac: bytes
    ) -> None:
        lying = flac_claiming(silent_hour_flac, 1)
        for form in ({}, {"max_audio_ms": "30800"}, {"max_audio_ms": "3600000"}):
            heard = node.post(
                "/v1/detect-language", headers=AUTH, files={"file": ("a.flac", lying)}, data=form
            )
            assert heard.status_code == 200
            assert heard.json()["duration"] == 30.0
        refused = node.post(
            "/v1/detect-language",
            headers=AUTH,
            files={"file": ("a.flac", lying)},
            data={"max_audio_ms": "1510"},
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_audio"

    def test_the_declared_length_is_a_positive_integer(
        self, node: TestClient, weather_wav: Path
    ) -> None:
        files = {"file": ("a.wav", weather_wav.read_bytes())}
        for value in ("0", "-5", "soon"):
            refused = node.post(
                "/v1/transcribe", headers=AUTH, files=files, data={"max_audio_ms": value}
            )
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "invalid_request"

    def test_a_wav_is_decoded_as_ffmpeg_reads_its_data_chunk(
        self, node: TestClient, weather_wav: Path
    ) -> None:
        short = wav_claiming(weather_wav.read_bytes(), 0.5)
        response = node.post(
            "/v1/transcribe",
            headers=AUTH,
            files={"file": ("a.wav", short)},
            data={"max_audio_ms": "1005"},
        )
        assert response.status_code == 200
        assert response.json()["duration"] == 0.5

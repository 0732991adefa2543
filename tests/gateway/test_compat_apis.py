"""whisper-asr-webservice's /asr and /detect-language, and the JSON /api/transcribe: the same
canonical result, authenticated and billed like the OpenAI endpoint."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
from pathlib import Path

import av
import httpx
import pytest

from billing.db import Database
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running
from tests.gateway.conftest import Gateway


def asr(gateway: Gateway, audio: bytes, **query: str) -> httpx.Response:
    return gateway.client.post(
        "/asr",
        params=query,
        headers=gateway.auth(),
        files={"audio_file": ("speech.wav", audio, "audio/wav")},
    )


def pcm16(wav: Path) -> bytes:
    """The raw 16 kHz mono s16le samples of a file, as whisper-asr-webservice reads encode=false."""
    with av.open(str(wav)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16_000)
        chunks = [
            bytes(frame.planes[0])[: frame.samples * 2]
            for packet_frame in container.decode(audio=0)
            for frame in resampler.resample(packet_frame)
        ]
        chunks += [bytes(f.planes[0])[: f.samples * 2] for f in resampler.resample(None)]
    return b"".join(chunks)


class TestAsr:
    def test_every_output_format_from_one_billed_transcription_each(
        self, gateway: Gateway, two_sentences_wav: Path
    ) -> None:
        audio = two_sentences_wav.read_bytes()
        responses = {output: asr(gateway, audio, output=output) for output in
                     ("txt", "json", "srt", "vtt", "tsv")}  # fmt: skip
        for output, response in responses.items():
            assert response.status_code == 200, response.text
            assert response.headers["content-disposition"] == (
                f'attachment; filename="speech.wav.{output}"'
            )
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["asr-engine"] == "pocketsphinx-en"
            assert int(response.headers["x-billing-output-tokens"]) > 0
        as_json = responses["json"].json()
        assert set(as_json) == {"text", "segments", "language"}
        assert as_json["language"] == "en"
        assert "weather" in as_json["text"]
        lines = responses["txt"].text.splitlines()
        assert lines == [segment["text"].strip() for segment in as_json["segments"]]
        tsv = list(csv.reader(io.StringIO(responses["tsv"].text), delimiter="\t"))
        assert tsv[0] == ["start", "end", "text"]
        assert [int(row[0]) for row in tsv[1:]] == [
            round(segment["start"] * 1000) for segment in as_json["segments"]
        ]
        assert "-->" in responses["srt"].text
        assert responses["vtt"].text.startswith("WEBVTT")
        # Five requests, five rows: the first went to the node, the others came from the cache.
        rows = usage_rows(gateway.database)
        assert [row.cached for row in rows] == [False, True, True, True, True]
        assert {row.billed_tokens for row in rows} == {
            int(responses["json"].headers["x-billing-output-tokens"])
        }

    def test_word_timestamps_and_raw_pcm(self, gateway: Gateway, weather_wav: Path) -> None:
        words = asr(gateway, weather_wav.read_bytes(), output="json", word_timestamps="true")
        raw = asr(gateway, pcm16(weather_wav), output="json", encode="false")
        assert words.status_code == raw.status_code == 200, raw.text
        segment_words = [w for s in words.json()["segments"] for w in s.get("words", [])]
        assert [w["word"] for w in segment_words][:2] == ["the", "weather"]
        assert raw.json()["text"] == words.json()["text"]

    @pytest.mark.parametrize(
        ("query", "status", "code"),
        [
            ({"task": "translate"}, 400, "invalid_value"),
            ({"output": "docx"}, 400, "invalid_value"),
            ({"model": "gpt-9"}, 404, "model_not_found"),
        ],
    )
    def test_refusals_bill_nothing(
        self, gateway: Gateway, weather_wav: Path, query: dict[str, str], status: int, code: str
    ) -> None:
        response = asr(gateway, weather_wav.read_bytes(), **query)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert usage_rows(gateway.database) == []

    def test_unauthenticated_calls_are_refused(self, gateway: Gateway, weather_wav: Path) -> None:
        response = gateway.client.post(
            "/asr", files={"audio_file": ("a.wav", weather_wav.read_bytes(), "audio/wav")}
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


class TestDetectLanguage:
    def test_the_language_and_its_bill(self, gateway: Gateway, weather_wav: Path) -> None:
        response = gateway.client.post(
            "/detect-language",
            headers=gateway.auth(),
            files={"audio_file": ("speech.wav", weather_wav.read_bytes(), "audio/wav")},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "detected_language": "english",
            "language_code": "en",
            "confidence": None,
        }
        (row,) = usage_rows(gateway.database)
        assert row.output_tokens == 2  # "en", counted in the plan's char unit
        assert int(response.headers["x-billing-cost-micros"]) == row.cost_micros


class TestJsonApi:
    def test_base64_in_text_and_language_out(self, gateway: Gateway, weather_wav: Path) -> None:
        encoded = base64.b64encode(weather_wav.read_bytes()).decode()
        response = gateway.client.post(
            "/api/transcribe",
            headers=gateway.auth(),
            json={"file": encoded, "language": "auto"},
        )
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"text", "language"}
        assert "weather" in response.json()["text"]
        assert response.json()["language"] == "en"
        (row,) = usage_rows(gateway.database)
        assert int(response.headers["x-billing-output-tokens"]) == row.billed_tokens

    @pytest.mark.parametrize(
        ("body", "code"),
        [
            ({"file": "not base64!!"}, "invalid_audio"),
            ({"file": ""}, "invalid_audio"),
            ({"file": base64.b64encode(b"plain text, not audio").decode()}, "invalid_audio"),
            ({"language": "en"}, "missing_required_parameter"),
        ],
    )
    def test_bad_bodies(self, gateway: Gateway, body: dict[str, str], code: str) -> None:
        response = gateway.client.post("/api/transcribe", headers=gateway.auth(), json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == code
        assert usage_rows(gateway.database) == []


def test_the_documented_curl_call_works_against_a_gateway_process(
    node_url: str, database: Database, tmp_path: Path, weather_wav: Path
) -> None:
    key = create_tenant_with_key(database, "acme")
    port = free_port()
    environment = {
        "BILLING_DATABASE_URL": database.url,
        "GATEWAY_NODES": node_url,
        "GATEWAY_NODE_SECRET": NODE_SECRET,
    }
    url = f"http://127.0.0.1:{port}"
    with running(["gateway", "--port", str(port)], environment, f"{url}/health/ready",
                 tmp_path / "gateway.log"):  # fmt: skip
        # whisper-asr-webservice's documented call, plus the key every call here needs.
        curl = subprocess.run(
            ["curl", "-sS", "-X", "POST", "-H", f"Authorization: Bearer {key}",
             "-F", f"audio_file=@{weather_wav}",
             f"{url}/asr?task=transcribe&language=en&output=json"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    body = json.loads(curl.stdout)
    assert "weather" in body["text"]
    assert body["language"] == "en"
    assert len(usage_rows(database)) == 1


class TestLanguageOnCompatibleRoutes:
    def test_asr_refuses_an_unknown_language(self, gateway: Gateway, weather_wav: Path) -> None:
        response = gateway.client.post(
            "/asr",
            params={"language": "klingon", "output": "json"},
            headers=gateway.auth(),
            files={"audio_file": ("a.wav", weather_wav.read_bytes())},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "language"
        assert response.json()["error"]["code"] == "invalid_value"
        assert usage_rows(gateway.database) == []

    def test_json_route_refuses_an_unknown_language(
        self, gateway: Gateway, weather_wav: Path
    ) -> None:
        encoded = base64.b64encode(weather_wav.read_bytes()).decode()
        response = gateway.client.post(
            "/api/transcribe",
            headers=gateway.auth(),
            json={"file": encoded, "language": "x" * 100_000},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "language"
        assert usage_rows(gateway.database) == []

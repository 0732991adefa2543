from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from billing.config import BillingSettings
from billing.db import Database
from billing.keys.service import revoke_api_key, split_key
from gateway.app import create_app
from tests.conftest import NODE_SECRET
from tests.fixtures.audio import PNG_IMAGE
from tests.fixtures.factories import TEST_ACTOR, create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port, running
from tests.gateway.conftest import MAX_UPLOAD_BYTES, Gateway, gateway_settings

SRT_CUE = re.compile(
    r"(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n(.+?)\n(?:\n|$)", re.S
)
VTT_CUE = re.compile(
    r"(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)\n(.+?)\n(?:\n|$)", re.S
)


def seconds(timestamp: str) -> float:
    hours, minutes, rest = timestamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def transcribe(gateway: Gateway, audio: bytes, **fields: str) -> httpx.Response:
    return gateway.client.post(
        "/v1/audio/transcriptions",
        headers=gateway.auth(),
        files={"file": ("speech.wav", audio, "audio/wav")},
        data={"model": "whisper-1", **fields},
    )


class TestResponseFormats:
    def test_json_is_billed_exactly_as_the_ledger_says(
        self, gateway: Gateway, weather_wav: Path
    ) -> None:
        response = transcribe(gateway, weather_wav.read_bytes())
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert "weather" in body["text"]
        (row,) = usage_rows(gateway.database)
        expected_tokens = len(re.sub(r"\s", "", body["text"]))
        assert row.output_tokens == expected_tokens == body["usage"]["output_tokens"]
        assert row.cost_micros == (expected_tokens * 20_000 + 500) // 1000
        assert body["usage"]["cost_micros"] == row.cost_micros
        assert body["usage"]["type"] == "tokens"
        assert body["usage"]["seconds"] == row.audio_ms / 1000
        headers = response.headers
        assert headers["x-billing-output-tokens"] == str(row.output_tokens)
        assert headers["x-billing-cost-micros"] == str(row.cost_micros)
        assert headers["x-cache"] == "miss"
        assert headers["x-request-id"] == row.request_id
        assert row.model == "pocketsphinx-en"

    def test_text(self, gateway: Gateway, weather_wav: Path) -> None:
        response = transcribe(gateway, weather_wav.read_bytes(), response_format="text")
        assert response.headers["content-type"].startswith("text/plain")
        assert "weather" in response.text
        assert not response.text.lstrip().startswith("{")

    def test_srt_parses_as_subtitles(self, gateway: Gateway, two_sentences_wav: Path) -> None:
        response = transcribe(gateway, two_sentences_wav.read_bytes(), response_format="srt")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-subrip")
        cues = SRT_CUE.findall(response.text)
        assert len(cues) == 2
        assert [int(cue[0]) for cue in cues] == [1, 2]
        assert "weather" in cues[0][3]
        assert "tomorrow" in cues[1][3]
        assert (
            seconds(cues[0][1]) < seconds(cues[0][2]) <= seconds(cues[1][1]) < seconds(cues[1][2])
        )

    def test_vtt_parses_as_subtitles(self, gateway: Gateway, two_sentences_wav: Path) -> None:
        response = transcribe(gateway, two_sentences_wav.read_bytes(), response_format="vtt")
        assert response.headers["content-type"].startswith("text/vtt")
        assert response.text.startswith("WEBVTT\n\n")
        cues = VTT_CUE.findall(response.text)
        assert len(cues) == 2
        assert seconds(cues[0][1]) <= seconds(cues[1][0])

    def test_verbose_json_with_word_timestamps(self, gateway: Gateway, weather_wav: Path) -> None:
        response = gateway.client.post(
            "/v1/audio/transcriptions",
            headers=gateway.auth(),
            files={"file": ("speech.wav", weather_wav.read_bytes(), "audio/wav")},
            data={
                "model": "whisper-1",
                "response_format": "verbose_json",
                "timestamp_granularities[]": ["word", "segment"],
            },
        )
        body = response.json()
        assert body["task"] == "transcribe"
        assert body["language"] == "english"
        assert body["duration"] > 1.0
        assert body["segments"][0]["start"] < body["segments"][0]["end"]
        assert "weather" in [word["word"] for word in body["words"]]
        assert body["usage"]["output_tokens"] == usage_rows(gateway.database)[0].output_tokens

    def test_every_format_bills_one_row_each(self, gateway: Gateway, weather_wav: Path) -> None:
        for format_ in ("json", "text", "srt", "vtt", "verbose_json"):
            response = transcribe(gateway, weather_wav.read_bytes(), response_format=format_)
            assert response.status_code == 200
        rows = usage_rows(gateway.database)
        assert len(rows) == 5
        assert len({row.request_id for row in rows}) == 5


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"].startswith("req_")
    return error  # type: ignore[no-any-return]


class TestBadInputIsNeverBilled:
    def test_missing_key(self, gateway: Gateway, weather_wav: Path) -> None:
        response = gateway.client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", weather_wav.read_bytes())},
            data={"model": "whisper-1"},
        )
        assert_error(response, 401, "invalid_api_key")
        assert usage_rows(gateway.database) == []

    @pytest.mark.parametrize("key", ["sk-asrgw-000000000000_nope", "not-a-key", "sk-asrgw-abc"])
    def test_wrong_key(self, gateway: Gateway, weather_wav: Path, key: str) -> None:
        response = gateway.client.post(
            "/v1/audio/transcriptions",
            headers=gateway.auth(key),
            files={"file": ("a.wav", weather_wav.read_bytes())},
            data={"model": "whisper-1"},
        )
        assert_error(response, 401, "invalid_api_key")
        assert usage_rows(gateway.database) == []

    def test_revoked_key(self, gateway: Gateway, weather_wav: Path) -> None:
        assert transcribe(gateway, weather_wav.read_bytes()).status_code == 200
        with gateway.database.transaction() as session:
            revoke_api_key(session, split_key(gateway.key) or "", actor=TEST_ACTOR)
        # Revoked straight in the ledger, as another replica would: this gateway may still
        # hold the key for GATEWAY_KEY_CACHE_SECONDS.
        time.sleep(gateway_settings("http://n").key_cache_seconds)
        response = transcribe(gateway, weather_wav.read_bytes())
        error = assert_error(response, 401, "invalid_api_key")
        assert "revoked" in str(error["message"])
        assert len(usage_rows(gateway.database)) == 1

    def test_x_api_key_header_works_too(self, gateway: Gateway, weather_wav: Path) -> None:
        response = gateway.client.post(
            "/v1/audio/transcriptions",
            headers={"X-API-Key": gateway.key},
            files={"file": ("a.wav", weather_wav.read_bytes())},
            data={"model": "whisper-1"},
        )
        assert response.status_code == 200

    def test_the_key_is_checked_before_the_upload_is_parsed(self, gateway: Gateway) -> None:
        # A multipart body whose content type names no boundary: parsing it fails.
        broken = b'--edge\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1'
        headers = {"Content-Type": "multipart/form-data"}
        wrong_key = gateway.client.post(
            "/v1/audio/transcriptions",
            headers={**headers, **gateway.auth("sk-asrgw-000000000000_nope")},
            content=broken,
        )
        assert_error(wrong_key, 401, "invalid_api_key")
        right_key = gateway.client.post(
            "/v1/audio/transcriptions", headers={**headers, **gateway.auth()}, content=broken
        )
        error = assert_error(right_key, 400, "http_error")
        assert error["message"] == "Missing boundary in multipart."
        assert usage_rows(gateway.database) == []

    def test_a_field_sent_empty_counts_as_not_sent(self, gateway: Gateway) -> None:
        response = gateway.client.post(
            "/v1/audio/transcriptions",
            headers=gateway.auth(),
            data={"model": "", "file": ""},
        )
        error = assert_error(response, 400, "missing_required_parameter")
        assert error["param"] == "file"
        assert usage_rows(gateway.database) == []

    def test_missing_file_field(self, gateway: Gateway) -> None:
        response = gateway.client.post(
            "/v1/audio/transcriptions", headers=gateway.auth(), data={"model": "whisper-1"}
        )
        error = assert_error(response, 400, "missing_required_parameter")
        assert error["param"] == "file"
        assert usage_rows(gateway.database) == []

    @pytest.mark.parametrize(
        ("audio", "message"), [(PNG_IMAGE, "not an accepted audio or video format"), (b"", "empty")]
    )
    def test_not_audio(self, gateway: Gateway, audio: bytes, message: str) -> None:
        error = assert_error(transcribe(gateway, audio), 400, "invalid_audio")
        assert message in str(error["message"])
        assert error["param"] == "file"
        assert usage_rows(gateway.database) == []

    def test_unknown_response_format(self, gateway: Gateway, weather_wav: Path) -> None:
        response = transcribe(gateway, weather_wav.read_bytes(), response_format="docx")
        assert assert_error(response, 400, "invalid_value")["param"] == "response_format"
        assert usage_rows(gateway.database) == []

    def test_word_timestamps_need_verbose_json(self, gateway: Gateway, weather_wav: Path) -> None:
        response = gateway.client.post(
            "/v1/audio/transcriptions",
            headers=gateway.auth(),
            files={"file": ("a.wav", weather_wav.read_bytes())},
            data={"model": "whisper-1", "timestamp_granularities[]": ["word"]},
        )
        assert_error(response, 400, "invalid_value")
        assert usage_rows(gateway.database) == []

    def test_unknown_model_and_language(self, gateway: Gateway, weather_wav: Path) -> None:
        assert_error(
            transcribe(gateway, weather_wav.read_bytes(), model="nope"), 404, "model_not_found"
        )
        assert_error(
            transcribe(gateway, weather_wav.read_bytes(), language="fr"),
            400,
            "unsupported_language",
        )
        assert usage_rows(gateway.database) == []

    def test_upload_over_the_limit(self, gateway: Gateway) -> None:
        oversized = b"\0" * (MAX_UPLOAD_BYTES + 128 * 1024)
        error = assert_error(transcribe(gateway, oversized), 413, "file_too_large")
        assert str(MAX_UPLOAD_BYTES) in str(error["message"])
        assert usage_rows(gateway.database) == []


class TestLanguage:
    """``language`` is checked at the edge: an unknown one is refused before the upload is
    read, and nothing is reserved or billed."""

    def test_a_known_code_is_accepted(self, gateway: Gateway, weather_wav: Path) -> None:
        response = transcribe(gateway, weather_wav.read_bytes(), language="en")
        assert response.status_code == 200, response.text
        assert len(usage_rows(gateway.database)) == 1

    @pytest.mark.parametrize("language", ["english", "xx", "EN", "en-US", "auto "])
    def test_an_unknown_code_is_refused_and_not_billed(
        self, gateway: Gateway, weather_wav: Path, language: str
    ) -> None:
        response = transcribe(gateway, weather_wav.read_bytes(), language=language)
        error = assert_error(response, 400, "invalid_value")
        assert error["param"] == "language"
        assert "ISO 639-1" in str(error["message"])
        assert usage_rows(gateway.database) == []

    def test_a_huge_language_is_refused_and_not_billed(
        self, gateway: Gateway, weather_wav: Path
    ) -> None:
        response = transcribe(gateway, weather_wav.read_bytes(), language="x" * 512 * 1024)
        error = assert_error(response, 400, "invalid_value")
        assert error["param"] == "language"
        # The message quotes only the start of what was sent.
        assert len(str(error["message"])) < 200
        assert usage_rows(gateway.database) == []


class TestBoundedFields:
    def test_an_overlong_idempotency_key_is_refused(
        self, gateway: Gateway, weather_wav: Path
    ) -> None:
        response = gateway.client.post(
            "/v1/audio/transcriptions",
            headers={**gateway.auth(), "Idempotency-Key": "k" * 256},
            files={"file": ("a.wav", weather_wav.read_bytes())},
            data={"model": "whisper-1"},
        )
        error = assert_error(response, 400, "invalid_value")
        assert error["param"] == "Idempotency-Key"
        assert usage_rows(gateway.database) == []

    @pytest.mark.parametrize(
        ("field", "value"), [("model", "m" * 129), ("prompt", "p" * 4097), ("temperature", "2")]
    )
    def test_fields_past_their_bounds(
        self, gateway: Gateway, weather_wav: Path, field: str, value: str
    ) -> None:
        response = transcribe(gateway, weather_wav.read_bytes(), **{field: value})
        assert assert_error(response, 400, "invalid_value")["param"] == field
        assert usage_rows(gateway.database) == []


class TestUpstream:
    def test_no_node_reachable_is_503_and_unbilled(
        self, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        dead = f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}"
        app = create_app(gateway_settings(dead), BillingSettings(database_url=database.url))
        with TestClient(app) as client:
            response = client.post(
                "/v1/audio/transcriptions",
                headers={"Authorization": f"Bearer {key}"},
                files={"file": ("a.wav", weather_wav.read_bytes())},
                data={"model": "whisper-1"},
            )
            ready = client.get("/health/ready")
        assert_error(response, 503, "upstream_unavailable")
        assert int(response.headers["retry-after"]) > 0
        assert usage_rows(database) == []
        assert ready.status_code == 503
        assert ready.json()["nodes"] is False

    def test_falls_over_to_a_live_node(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(database, "acme")
        nodes = f"http://127.0.0.1:{free_port()},{node_url}"
        app = create_app(gateway_settings(nodes), BillingSettings(database_url=database.url))
        with TestClient(app) as client:
            statuses = [
                client.post(
                    "/v1/audio/transcriptions",
                    headers={"Authorization": f"Bearer {key}"},
                    files={"file": ("a.wav", weather_wav.read_bytes())},
                    data={"model": "whisper-1"},
                ).status_code
                for _ in range(2)
            ]
        assert statuses == [200, 200]
        assert len(usage_rows(database)) == 2


@pytest.fixture(scope="module")
def never_ready_node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real node whose model cannot load: alive, never ready, answers 503 node_not_ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("broken-node") / "node.log"
    environment = {
        "INFERENCE_NODE_SECRET": NODE_SECRET,
        "INFERENCE_MODELS": "pocketsphinx-en,broken=/nonexistent/model-dir",
    }
    with running(["node", "--port", str(port)], environment, f"{url}/health/live", log):
        yield url


class TestNodeNotReady:
    def post(self, nodes: str, database: Database, audio: bytes) -> list[httpx.Response]:
        key = create_tenant_with_key(database, "acme")
        app = create_app(gateway_settings(nodes), BillingSettings(database_url=database.url))
        with TestClient(app) as client:
            return [
                client.post(
                    "/v1/audio/transcriptions",
                    headers={"Authorization": f"Bearer {key}"},
                    files={"file": ("a.wav", audio)},
                    data={"model": "whisper-1"},
                )
                for _ in range(2)
            ]

    def test_only_a_loading_node_is_503(
        self, never_ready_node_url: str, database: Database, weather_wav: Path
    ) -> None:
        for response in self.post(never_ready_node_url, database, weather_wav.read_bytes()):
            assert_error(response, 503, "upstream_unavailable")
        assert usage_rows(database) == []

    def test_a_loading_node_is_skipped_for_a_ready_one(
        self, never_ready_node_url: str, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        nodes = f"{never_ready_node_url},{node_url}"
        responses = self.post(nodes, database, weather_wav.read_bytes())
        assert [response.status_code for response in responses] == [200, 200]
        assert len(usage_rows(database)) == 2


class TestEveryResponse:
    def test_request_id_on_success_errors_and_unknown_routes(self, gateway: Gateway) -> None:
        responses = [
            gateway.client.get("/health/live"),
            gateway.client.get("/no/such/route"),
            gateway.client.get("/v1/models"),
        ]
        ids = [response.headers["x-request-id"] for response in responses]
        assert all(request_id.startswith("req_") for request_id in ids)
        assert len(set(ids)) == 3
        assert responses[1].json()["error"]["code"] == "not_found"
        assert responses[2].json()["error"]["code"] == "invalid_api_key"

    def test_models_lists_what_the_nodes_serve(self, gateway: Gateway) -> None:
        body = gateway.client.get("/v1/models", headers=gateway.auth()).json()
        assert body["object"] == "list"
        assert [model["id"] for model in body["data"]] == ["pocketsphinx-en"]


class TestNodeErrorMapping:
    @pytest.mark.parametrize(
        ("status", "code", "expected_status", "expected_code"),
        [
            (413, "audio_too_long", 413, "audio_too_long"),
            (413, "file_too_large", 413, "file_too_large"),
            (400, "invalid_audio", 400, "invalid_audio"),
            (400, "unsupported_language", 400, "unsupported_language"),
            (500, "internal_error", 503, "upstream_unavailable"),
            (401, "unauthorized", 503, "upstream_unavailable"),
        ],
    )
    def test_node_codes_become_customer_codes(
        self, status: int, code: str, expected_status: int, expected_code: str
    ) -> None:
        from gateway.nodes import node_error

        response = httpx.Response(
            status, json={"error": {"message": "m", "type": "t", "code": code}}
        )
        error = node_error("http://node", response)
        assert (error.status_code, error.code) == (expected_status, expected_code)

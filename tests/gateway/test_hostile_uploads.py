"""Hostile uploads through the gateway and a real node process: files that lie about their
length are billed on what they hold or refused; inputs that would make FFmpeg read other files,
images and broken files are refused; nothing is billed or left reserved for any refusal."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from billing.db import Database
from billing.models import Reservation
from tests.fixtures import hostile_media as media
from tests.fixtures.audio import PNG_IMAGE
from tests.fixtures.factories import account, usage_rows
from tests.gateway.conftest import Gateway


def transcribe(gateway: Gateway, name: str, data: bytes) -> httpx.Response:
    return gateway.client.post(
        "/v1/audio/transcriptions",
        headers=gateway.auth(),
        files={"file": (name, data, "application/octet-stream")},
        data={"model": "whisper-1"},
    )


def assert_nothing_billed_or_held(database: Database) -> None:
    assert usage_rows(database) == []
    with database.transaction() as session:
        reservations = session.exec(select(Reservation)).all()
    assert all(reservation.state == "released" for reservation in reservations)
    held = account(database, "acme")
    assert held.reserved_micros == 0
    assert held.spent_micros == 0


class TestLyingLength:
    def test_a_flac_claiming_one_second_is_billed_on_its_twenty_five(
        self, gateway: Gateway, speech_25s_wav: Path, tmp_path: Path
    ) -> None:
        honest = transcribe(gateway, "speech.wav", speech_25s_wav.read_bytes())
        flac = media.encode(speech_25s_wav, tmp_path / "speech.flac")
        lying = transcribe(gateway, "speech.flac", media.flac_claiming(flac, 1))
        assert honest.status_code == lying.status_code == 200, lying.text
        assert lying.json()["text"] == honest.json()["text"]
        tokens = int(lying.headers["x-billing-output-tokens"])
        assert tokens == int(honest.headers["x-billing-output-tokens"])
        # One second at the plan's 50 tokens per second would have capped it at 50.
        assert tokens > 50
        honest_row, lying_row = usage_rows(gateway.database)
        assert lying_row.audio_ms == honest_row.audio_ms == 25_000
        assert lying_row.billed_tokens == lying_row.output_tokens == tokens
        assert lying_row.cost_micros == honest_row.cost_micros

    def test_an_hour_behind_a_one_second_header_is_too_long(
        self, gateway: Gateway, silent_hour_flac: bytes
    ) -> None:
        response = transcribe(gateway, "hour.flac", media.flac_claiming(silent_hour_flac, 1))
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["code"] == "audio_too_long"
        assert "more than 300 seconds" in error["message"]
        assert "POST /v1/jobs" in error["message"]
        assert_nothing_billed_or_held(gateway.database)

    def test_packets_that_understate_the_audio_are_refused_by_the_node(
        self, gateway: Gateway, speech_25s_wav: Path, tmp_path: Path
    ) -> None:
        m4a = media.encode(speech_25s_wav, tmp_path / "speech.m4a")
        response = transcribe(gateway, "speech.m4a", media.mp4_packets_divided(m4a, 25))
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_audio"
        assert "more audio than its packets declare" in error["message"]
        assert_nothing_billed_or_held(gateway.database)

    def test_a_wav_is_billed_on_the_data_ffmpeg_reads(
        self, gateway: Gateway, weather_wav: Path
    ) -> None:
        response = transcribe(gateway, "w.wav", media.wav_claiming(weather_wav.read_bytes(), 0.5))
        assert response.status_code == 200, response.text
        (row,) = usage_rows(gateway.database)
        assert row.audio_ms == 500


class TestNotAudio:
    @pytest.mark.parametrize(
        ("kind", "message"),
        [
            ("ffconcat", "not an accepted audio or video format"),
            ("hls", "not a(n accepted| recognized) audio or video"),
            ("dash", "not a(n accepted| recognized) audio or video"),
            ("png", "not an accepted audio or video format"),
            ("jpeg", "not an accepted audio or video format"),
            ("video only", "no audio stream"),
            ("truncated m4a", "truncated or corrupt"),
            ("empty", "empty"),
        ],
    )
    def test_refused_before_anything_is_held(
        self, gateway: Gateway, weather_wav: Path, tmp_path: Path, kind: str, message: str
    ) -> None:
        # Each input that reads a file names a WAV that says "the weather is nice today".
        target = str(weather_wav)
        m4a = media.encode(weather_wav, tmp_path / "w.m4a")
        data = {
            "ffconcat": lambda: media.ffconcat(target),
            "hls": lambda: media.hls_playlist(target),
            "dash": lambda: media.dash_manifest(target),
            "png": lambda: PNG_IMAGE,
            "jpeg": lambda: media.jpeg_image(tmp_path),
            "video only": lambda: media.video_only(tmp_path),
            "truncated m4a": lambda: m4a[: len(m4a) // 2],
            "empty": lambda: b"",
        }[kind]()
        response = transcribe(gateway, "upload.wav", data)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_audio"
        assert error["param"] == "file"
        assert re.search(message, error["message"]), error["message"]
        assert "weather" not in response.text
        assert_nothing_billed_or_held(gateway.database)


class TestDetectLanguage:
    def test_an_hour_is_measured_and_billed_as_the_thirty_seconds_heard(
        self, gateway: Gateway, silent_hour_flac: bytes
    ) -> None:
        response = gateway.client.post(
            "/detect-language",
            headers=gateway.auth(),
            files={"audio_file": ("hour.flac", media.flac_claiming(silent_hour_flac, 1))},
        )
        assert response.status_code == 200, response.text
        assert response.json()["language_code"] == "en"
        (row,) = usage_rows(gateway.database)
        assert row.audio_ms == 30_000

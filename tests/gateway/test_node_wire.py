"""The multipart body sent to nodes parses back to the same fields and file."""

from __future__ import annotations

import asyncio

from starlette.datastructures import UploadFile
from starlette.requests import Request

from gateway.nodes.wire import decode_allowance_ms, multipart_body, transcribe_form
from inference.protocol import TranscribeParams


def parse(content: bytes, content_type: str) -> dict[str, object]:
    async def run() -> dict[str, object]:
        sent = False

        async def receive() -> dict[str, object]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": content, "more_body": False}

        scope = {
            "type": "http",
            "method": "POST",
            "headers": [(b"content-type", content_type.encode())],
        }
        form = await Request(scope, receive).form()
        parsed: dict[str, object] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                parsed[name] = (value.filename, value.content_type, await value.read())
            else:
                parsed[name] = value
        return parsed

    return asyncio.run(run())


def test_fields_and_file_round_trip() -> None:
    audio = bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"
    body = multipart_body(
        {"language": "auto", "hotwords": 'say "hello"\nworld', "model": "m1"},
        "file",
        'my "talk".wav',
        audio,
        "audio/wav",
    )
    assert body.content_type.startswith("multipart/form-data; boundary=")
    parsed = parse(body.content, body.content_type)
    assert parsed["language"] == "auto"
    assert parsed["model"] == "m1"
    assert parsed["hotwords"] == 'say "hello"\nworld'
    assert parsed["file"] == ('my "talk".wav', "audio/wav", audio)


def test_a_content_type_cannot_inject_headers() -> None:
    body = multipart_body({}, "file", "a.wav", b"RIFF", "audio/wav\r\nX-Evil: 1")
    assert b"\r\nX-Evil" not in body.content
    parsed = parse(body.content, body.content_type)
    assert parsed["file"] == ("a.wav", "audio/wavX-Evil: 1", b"RIFF")


def test_temperature_travels_only_when_sampling_is_asked_for() -> None:
    sampled = transcribe_form(TranscribeParams(model="m", hotwords="x", temperature=0.6))
    assert sampled["temperature"] == "0.6"
    assert TranscribeParams.model_validate(sampled) == TranscribeParams(
        model="m", hotwords="x", temperature=0.6
    )
    assert "temperature" not in transcribe_form(TranscribeParams(temperature=0.0))
    assert "temperature" not in transcribe_form(TranscribeParams())


def test_a_measured_file_may_decode_to_its_length_plus_half_a_second_and_one_per_cent() -> None:
    assert decode_allowance_ms(1_000) == 1_510
    assert decode_allowance_ms(300_000) == 303_500
    assert decode_allowance_ms(1) == 502  # the per cent rounds up
    form = transcribe_form(TranscribeParams(), audio_ms=25_000)
    assert form["max_audio_ms"] == "25750"
    assert "max_audio_ms" not in transcribe_form(TranscribeParams())

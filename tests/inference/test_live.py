"""Live decoding on an online model: FunASR's ParaformerStreaming (a tiny random-weight one
built with FunASR's classes) behind ``WebSocket /v1/transcribe/live``."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from inference import metrics
from inference.app import create_app
from inference.audio import SAMPLE_RATE, AudioArray, decode_audio
from inference.config import InferenceSettings
from inference.engines.funasr_engine import FunASREngine
from inference.errors import LiveUnsupported
from inference.host import BatchingSettings, ModelHost
from inference.live import joined_piece
from inference.protocol import TRANSCRIBE_LIVE_PATH, TranscribeParams

ONLINE = "tiny-online"


@pytest.fixture(scope="module")
def online_engine(online_paraformer_dir: Path) -> FunASREngine:
    engine = FunASREngine(ONLINE, str(online_paraformer_dir), device="cpu", threads=1)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def speech(weather_wav: Path, two_sentences_wav: Path) -> AudioArray:
    return np.concatenate(
        [decode_audio(weather_wav.read_bytes()), decode_audio(two_sentences_wav.read_bytes())]
    )


def pcm16(audio: AudioArray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def decode_in_pieces(engine: FunASREngine, audio: AudioArray, piece_samples: int) -> list[str]:
    state = engine.start_live(TranscribeParams(model=ONLINE))
    starts = range(0, audio.size, piece_samples)
    return [
        engine.decode_live(
            state, audio[start : start + piece_samples], is_final=start == starts[-1]
        )
        for start in starts
    ]


class TestOnlineEngine:
    def test_an_online_model_says_it_streams(self, online_engine: FunASREngine) -> None:
        info = online_engine.info()
        assert info.streaming is True
        assert info.hotwords is False

    def test_the_text_does_not_depend_on_how_the_audio_was_cut(
        self, online_engine: FunASREngine, speech: AudioArray
    ) -> None:
        chunked = decode_in_pieces(online_engine, speech, SAMPLE_RATE * 6 // 10)
        small = decode_in_pieces(online_engine, speech, SAMPLE_RATE // 10)
        whole = decode_in_pieces(online_engine, speech, speech.size)
        assert sum(1 for text in chunked if text) >= 2  # text arrives while the audio does
        # The same tokens whatever the cut; FunASR's post-processing writes a lone Latin letter
        # in upper or lower case depending on its neighbours within one call.
        assert "".join(chunked).lower() == "".join(small).lower() == "".join(whole).lower() != ""

    def test_a_stream_does_not_depend_on_an_earlier_one(
        self, online_engine: FunASREngine, speech: AudioArray
    ) -> None:
        first = decode_in_pieces(online_engine, speech, SAMPLE_RATE // 5)
        decode_in_pieces(online_engine, speech[::-1].copy(), SAMPLE_RATE // 5)
        assert decode_in_pieces(online_engine, speech, SAMPLE_RATE // 5) == first

    def test_an_offline_model_refuses_live_decoding(self, paraformer_dir: Path) -> None:
        engine = FunASREngine("tiny-paraformer", str(paraformer_dir), device="cpu", threads=1)
        engine.load()
        assert engine.info().streaming is False
        with pytest.raises(LiveUnsupported, match="not an online model"):
            engine.start_live(TranscribeParams(model="tiny-paraformer"))


class TestLiveStreamsShareTheModel:
    def test_a_live_stream_does_not_keep_requests_from_batching(
        self, online_engine: FunASREngine, speech: AudioArray
    ) -> None:
        """Pieces of a live stream go alone, between batches: eight files sent while a stream
        runs still share engine calls."""
        host = ModelHost(online_engine, BatchingSettings(max_batch=8, max_wait_ms=200))
        host.start()
        assert host.loaded.wait(60)
        assert host.ready
        clips = [speech[: SAMPLE_RATE * (1 + index % 3)] for index in range(8)]
        params = TranscribeParams(model=ONLINE)

        async def scenario() -> tuple[list[str], list[str]]:
            with host.open_live(params) as stream:

                async def live() -> list[str]:
                    piece = SAMPLE_RATE * 6 // 10
                    texts = [
                        await stream.decode(speech[start : start + piece])
                        for start in range(0, speech.size, piece)
                    ]
                    return [*texts, await stream.decode(speech[:0], is_final=True)]

                texts, outputs = await asyncio.gather(live(), host.transcribe_many(clips, params))
            return texts, [output.text for output in outputs]

        try:
            calls_before = metrics.engine_calls.labels(ONLINE)._value.get()
            texts, files = asyncio.run(scenario())
            calls = metrics.engine_calls.labels(ONLINE)._value.get() - calls_before
        finally:
            host.stop()
        pieces = len(texts)
        assert calls < pieces + len(clips)  # the files shared calls
        solo = decode_in_pieces(online_engine, speech, SAMPLE_RATE * 6 // 10)
        assert "".join(texts).lower() == "".join(solo).lower()
        assert files == [online_engine.transcribe(clip, params).text for clip in clips]


@pytest.fixture
def live_node(online_paraformer_dir: Path, paraformer_dir: Path) -> Iterator[TestClient]:
    settings = InferenceSettings(
        models=f"{ONLINE}={online_paraformer_dir},tiny-paraformer={paraformer_dir}",
        device="cpu",
        max_streams=1,
        node_secret="node-secret",
    )
    with TestClient(
        create_app(settings), headers={"Authorization": "Bearer node-secret"}
    ) as client:
        deadline = time.monotonic() + 120
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/health/ready").json()
            time.sleep(0.05)
        yield client


def send_speech(socket: WebSocketTestSession, audio: AudioArray, frame_ms: int = 100) -> None:
    frame = SAMPLE_RATE * frame_ms // 1000
    for start in range(0, audio.size, frame):
        socket.send_bytes(pcm16(audio[start : start + frame]))


def until_done(socket: WebSocketTestSession) -> tuple[list[str], str]:
    deltas: list[str] = []
    assert socket.receive_json() == {"type": "ready"}
    while (message := socket.receive_json())["type"] == "delta":
        deltas.append(message["text"])
    assert message["type"] == "done", message
    return deltas, message["text"]


class TestLiveRoute:
    def test_deltas_as_the_audio_arrives_then_the_whole_text(
        self, live_node: TestClient, speech: AudioArray, online_engine: FunASREngine
    ) -> None:
        with live_node.websocket_connect(TRANSCRIBE_LIVE_PATH) as socket:
            socket.send_json({"model": ONLINE})
            send_speech(socket, speech)
            socket.send_json({"type": "end"})
            deltas, text = until_done(socket)
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_json()
        assert closed.value.code == 1000
        assert len(deltas) >= 2
        # The node decodes 600 ms chunks of the PCM whatever its frames: the texts of 600 ms
        # pieces, joined as deltas.
        sent = np.frombuffer(pcm16(speech), dtype="<i2").astype(np.float32) / 32768.0
        solo = decode_in_pieces(online_engine, sent, SAMPLE_RATE * 6 // 10)
        pieces = [text for text in solo if text]
        expected = pieces[:1] + [joined_piece(a, b) for a, b in itertools.pairwise(pieces)]
        assert deltas == expected
        assert "".join(deltas) == text

    def test_past_max_streams_a_stream_is_refused_as_overloaded(
        self, live_node: TestClient, speech: AudioArray
    ) -> None:
        with live_node.websocket_connect(TRANSCRIBE_LIVE_PATH) as first:
            first.send_json({"model": ONLINE})
            send_speech(first, speech[:SAMPLE_RATE])
            with live_node.websocket_connect(TRANSCRIBE_LIVE_PATH) as second:
                second.send_json({"model": ONLINE})
                refusal = second.receive_json()
                with pytest.raises(WebSocketDisconnect) as closed:
                    second.receive_json()
            assert refusal["type"] == "error"
            assert refusal["error"]["code"] == "node_overloaded"
            assert closed.value.code == 1013
            first.send_json({"type": "end"})
            until_done(first)
        # The first stream's end frees its place.
        with live_node.websocket_connect(TRANSCRIBE_LIVE_PATH) as third:
            third.send_json({"model": ONLINE})
            third.send_json({"type": "end"})
            assert until_done(third) == ([], "")
        assert 'asrnode_live_streams{model="tiny-online"} 0.0' in live_node.get("/metrics").text

    @pytest.mark.parametrize(
        ("first", "headers", "code", "close_code"),
        [
            ({"model": "tiny-paraformer"}, {}, "live_transcription_unsupported", 1008),
            ({"model": "nope"}, {}, "model_not_found", 1008),
            ({"model": ONLINE, "temperature": 7}, {}, "invalid_request", 1008),
            ({"model": ONLINE}, {"Authorization": "Bearer wrong"}, "unauthorized", 1008),
        ],
    )
    def test_refusals_say_why(
        self,
        live_node: TestClient,
        first: dict[str, object],
        headers: dict[str, str],
        code: str,
        close_code: int,
    ) -> None:
        with live_node.websocket_connect(TRANSCRIBE_LIVE_PATH, headers=headers) as socket:
            socket.send_json(first)
            refusal = socket.receive_json()
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_json()
        assert refusal["type"] == "error"
        assert refusal["error"]["code"] == code
        assert closed.value.code == close_code

    def test_audio_that_is_not_pcm16_is_refused(self, live_node: TestClient) -> None:
        with live_node.websocket_connect(TRANSCRIBE_LIVE_PATH) as socket:
            socket.send_json({"model": ONLINE})
            assert socket.receive_json() == {"type": "ready"}
            socket.send_bytes(b"\x00\x01\x02")
            refusal = socket.receive_json()
        assert refusal["error"]["code"] == "invalid_audio"

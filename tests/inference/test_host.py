"""The model host on its own: ordering, and one bad item failing alone inside a batch."""

from __future__ import annotations

import asyncio
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from inference.audio import decode_audio
from inference.engines.funasr_engine import FunASREngine
from inference.host import BatchingSettings, ModelHost
from inference.protocol import TranscribeParams


@pytest.fixture(scope="module")
def host(paraformer_dir: Path) -> ModelHost:
    engine = FunASREngine("host-test", str(paraformer_dir), device="cpu")
    model_host = ModelHost(engine, BatchingSettings(max_batch=8, max_wait_ms=100, max_queue=8))
    model_host.start()
    assert model_host.loaded.wait(120)
    assert model_host.ready, model_host.error
    return model_host


def test_a_bad_item_fails_alone_and_the_rest_keep_their_order(
    host: ModelHost, sentence_clips: list[bytes]
) -> None:
    clips = [decode_audio(clip) for clip in sentence_clips[:4]]
    broken = np.full(16_000, np.nan, dtype=np.float32)
    params = TranscribeParams()

    async def run() -> tuple[list[object], list[object]]:
        solo = [(await host.transcribe_many([clip], params))[0].text for clip in clips]
        futures = [host._submit(audio, params) for audio in [clips[0], broken, *clips[1:]]]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        return solo, list(outcomes)

    solo, outcomes = asyncio.run(run())
    assert isinstance(outcomes[1], Exception)
    texts = [outcome.text for outcome in outcomes if not isinstance(outcome, Exception)]  # type: ignore[attr-defined]
    assert len(texts) == 4
    # Same order as submitted: each text is nearest to its own clip's solo transcript.
    for index, text in enumerate(texts):
        ratios = [SequenceMatcher(None, text, candidate).ratio() for candidate in solo]
        assert ratios.index(max(ratios)) == index


def test_a_cancelled_item_never_reaches_the_engine(host: ModelHost, weather_wav: Path) -> None:
    audio = decode_audio(weather_wav.read_bytes())

    async def run() -> None:
        # Queued and cancelled with the queue's lock held: the batcher cannot take the item in
        # between, however late this thread is scheduled.
        with host._condition:
            future = host._submit(audio, TranscribeParams())
            future.cancel()
        survivor = await host.transcribe_many([audio], TranscribeParams())
        assert survivor[0].text

    dropped = host_dropped(host)
    asyncio.run(run())
    assert host_dropped(host) == dropped + 1


def test_a_queue_of_only_abandoned_items_leaves_the_host_serving(
    host: ModelHost, weather_wav: Path
) -> None:
    # As when a gateway is killed with its requests queued: the batcher wakes to nothing but
    # abandoned items, drops them, and must go on serving.
    audio = decode_audio(weather_wav.read_bytes())
    dropped = host_dropped(host)

    async def run() -> None:
        with host._condition:
            future = host._submit(audio, TranscribeParams())
            future.cancel()
        while host_dropped(host) == dropped:
            await asyncio.sleep(0.01)
        survivor = await asyncio.wait_for(host.transcribe_many([audio], TranscribeParams()), 120)
        assert survivor[0].text

    asyncio.run(run())


def host_dropped(host: ModelHost) -> float:
    return (
        REGISTRY.get_sample_value(
            "asrnode_dropped_items_total", {"model": host.model_id, "reason": "client_gone"}
        )
        or 0.0
    )

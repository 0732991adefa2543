"""Micro-batching on a real node process: concurrent requests share engine calls, and every
caller gets the transcript of its own audio."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from difflib import SequenceMatcher
from pathlib import Path

import httpx
import pytest

from tests.fixtures.nodes import metric, node_process
from tests.inference.conftest import SENTENCES


async def transcribe_all(url: str, clips: list[bytes], *, concurrently: bool) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(clip: bytes) -> str:
            response = await client.post("/v1/transcribe", files={"file": ("a.wav", clip)})
            assert response.status_code == 200, response.text
            return str(response.json()["text"])

        if concurrently:
            return list(await asyncio.gather(*(one(clip) for clip in clips)))
        return [await one(clip) for clip in clips]


def closest(text: str, candidates: list[str]) -> int:
    return max(
        range(len(candidates)), key=lambda i: SequenceMatcher(None, text, candidates[i]).ratio()
    )


@pytest.fixture(scope="module")
def paraformer_node(
    paraformer_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with node_process(
        tmp_path_factory.mktemp("paraformer-node"),
        f"tiny-paraformer={paraformer_dir}",
        device="cpu",
        max_batch=16,
        max_wait_ms=50,
    ) as url:
        yield url


@pytest.fixture(scope="module")
def pocketsphinx_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with node_process(
        tmp_path_factory.mktemp("ps-node"), "pocketsphinx-en", max_batch=16, max_wait_ms=50
    ) as url:
        yield url


class TestMicroBatching:
    def test_sixteen_concurrent_requests_need_fewer_generate_calls(
        self, paraformer_node: str, sentence_clips: list[bytes]
    ) -> None:
        model = "tiny-paraformer"
        solo = asyncio.run(transcribe_all(paraformer_node, sentence_clips, concurrently=False))
        calls_before = metric(paraformer_node, "asrnode_engine_calls_total", model=model)
        items_before = metric(paraformer_node, "asrnode_items_total", model=model, outcome="ok")
        batched = asyncio.run(transcribe_all(paraformer_node, sentence_clips, concurrently=True))
        calls = metric(paraformer_node, "asrnode_engine_calls_total", model=model) - calls_before
        items = (
            metric(paraformer_node, "asrnode_items_total", model=model, outcome="ok") - items_before
        )
        assert items == 16
        assert calls < 16
        # Padding inside a batch nudges a random model's output slightly, so each caller's text
        # is matched to the nearest solo transcript: it must be its own.
        assert len(set(solo)) == 16
        assert [closest(text, solo) for text in batched] == list(range(16))

    def test_real_words_come_back_to_the_right_caller(
        self, pocketsphinx_node: str, sentence_clips: list[bytes]
    ) -> None:
        model = "pocketsphinx-en"
        solo = asyncio.run(transcribe_all(pocketsphinx_node, sentence_clips, concurrently=False))
        calls_before = metric(pocketsphinx_node, "asrnode_engine_calls_total", model=model)
        texts = asyncio.run(transcribe_all(pocketsphinx_node, sentence_clips, concurrently=True))
        calls = metric(pocketsphinx_node, "asrnode_engine_calls_total", model=model)
        assert calls - calls_before < 16
        # PocketSphinx needs no padding, so a batched transcript equals the one decoded alone.
        assert texts == solo
        heard_own_words = sum(
            bool(set(text.split()) & set(sentence.split()))
            for text, sentence in zip(texts, SENTENCES, strict=True)
        )
        assert heard_own_words >= 12

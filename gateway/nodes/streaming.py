"""A transcript streamed from a node (``POST /v1/transcribe/stream``, NDJSON).

The node is chosen and retried exactly as for a whole transcript, but only until its answer
starts: once a node has begun streaming, a failure is the stream's end (``UpstreamUnavailable``
raised from the iterator), since what was already passed on cannot be taken back.

```
open ──▶ NotSent / 502·503·504 ──▶ next node (up to node_max_attempts)
     ├──▶ 4xx ──▶ the node's refusal, mapped (nothing streamed)
     └──▶ 200 ──▶ TranscriptDelta … TranscriptDelta, TranscriptionResult
                        └── broken connection / error event ──▶ UpstreamUnavailable
```
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import metrics
from gateway.errors import ModelNotFound, UpstreamUnavailable
from gateway.nodes.client import FailedAfterSending, NodeStream, NotSent
from gateway.nodes.errors import node_error
from gateway.nodes.wire import multipart_body, retry_after_header, transcribe_form
from inference.protocol import TRANSCRIBE_STREAM_PATH, TranscribeParams, TranscriptionResult

if TYPE_CHECKING:
    from gateway.nodes.node import Node
    from gateway.nodes.pool import NodePool

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """Text the node has decoded; the deltas of a stream, joined, are its final text."""

    text: str


StreamedTranscript = AsyncIterator[TranscriptDelta | TranscriptionResult]


@asynccontextmanager
async def stream_transcript(
    pool: NodePool,
    audio: bytes,
    filename: str,
    content_type: str,
    params: TranscribeParams,
    *,
    audio_ms: int | None = None,
) -> AsyncIterator[StreamedTranscript]:
    """The node's deltas and then its result, from the first node that starts answering."""
    from gateway.nodes.pool import RETRYABLE_STATUSES

    pool._refuse_unknown_model(params.model)
    body = multipart_body(transcribe_form(params), "file", filename, audio, content_type)
    headers = {**pool.headers, "Content-Type": body.content_type}
    tried: set[Node] = set()
    failures: list[str] = []
    hints: list[float] = []
    model_missing: ModelNotFound | None = None
    while len(failures) < pool.settings.node_max_attempts:
        node = pool._choose(params.model, tried)
        if node is None:
            break
        tried.add(node)
        node.outstanding += 1
        node.breaker.on_dispatch()
        started = time.perf_counter()
        outcome = "cancelled"
        try:
            try:
                async with pool.client.stream(
                    f"{node.url}{TRANSCRIBE_STREAM_PATH}",
                    body.content,
                    headers,
                    read_timeout=pool.read_timeout_seconds(audio_ms),
                    connect_timeout=pool.settings.node_connect_timeout_seconds,
                ) as answer:
                    outcome = f"{answer.status_code // 100}xx"
                    if answer.status_code in RETRYABLE_STATUSES:
                        pool._record_failure(node)
                        failures.append(f"{node.url}: HTTP {answer.status_code}")
                        hints.extend(retry_after_header(await answer.response()))
                        continue
                    if not answer.is_success:
                        refusal = node_error(node.url, await answer.response())
                        node.breaker.record_success()
                        if isinstance(refusal, ModelNotFound):
                            model_missing = refusal
                            continue
                        raise refusal
                    node.breaker.record_success()
                    yield _events(node.url, answer)
                    return
            except NotSent as error:
                outcome = "pool_timeout" if error.pool_timeout else "connect_error"
                if not error.pool_timeout:
                    pool._record_failure(node)
                failures.append(f"{node.url}: {error}")
                continue
            except FailedAfterSending as error:
                outcome = "transport_error"
                pool._record_failure(node)
                raise _broken(node.url, str(error), pool) from error
        finally:
            node.outstanding -= 1
            node.breaker.on_finish()
            metrics.UPSTREAM_SECONDS.labels(node.url, TRANSCRIBE_STREAM_PATH).observe(
                time.perf_counter() - started
            )
            metrics.UPSTREAM_REQUESTS.labels(node.url, outcome).inc()
    if model_missing is not None and not failures:
        raise model_missing
    logger.warning(
        "no inference node could stream the request: %s", "; ".join(failures) or "no node"
    )
    raise UpstreamUnavailable(
        "No inference node is available to serve the request; nothing was billed. Retry later.",
        retry_after_seconds=pool._retry_after(hints),
    )


async def _events(url: str, answer: NodeStream) -> StreamedTranscript:
    try:
        async for event in _parsed(url, answer):
            yield event
    except FailedAfterSending as error:
        raise _broken(url, str(error), None) from error


async def _parsed(url: str, answer: NodeStream) -> StreamedTranscript:
    async for line in answer.lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as error:
            raise _broken(url, f"not an NDJSON line: {line[:80]!r}", None) from error
        if event.get("type") == "delta":
            yield TranscriptDelta(str(event["text"]))
        elif event.get("type") == "result":
            yield TranscriptionResult.model_validate(event["result"])
            return
        elif event.get("type") == "error":
            detail = event.get("error") or {}
            logger.warning("node %s failed mid-stream: %s", url, detail.get("message"))
            raise UpstreamUnavailable("The inference node failed while streaming. Retry later.")
    raise UpstreamUnavailable("The inference node ended the stream without a result.")


def _broken(url: str, detail: str, pool: NodePool | None) -> UpstreamUnavailable:
    logger.warning("node %s failed mid-stream: %s", url, detail)
    return UpstreamUnavailable(
        "The inference node did not complete the request. Retry later.",
        retry_after_seconds=pool._retry_after([]) if pool is not None else 5,
    )

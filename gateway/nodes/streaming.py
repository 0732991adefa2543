"""A transcript streamed from a node (``POST /v1/transcribe/stream``, NDJSON): its events.

``NodePool.transcribe_stream`` chooses and retries the node exactly as for a whole transcript,
but only until its answer starts: once a node has begun streaming, a failure is the stream's
end (``UpstreamUnavailable`` raised from the iterator), since what was already passed on cannot
be taken back.

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
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.config import DEFAULT_NODE_HEALTH_INTERVAL_SECONDS
from gateway.errors import UpstreamUnavailable
from gateway.nodes.client import FailedAfterSending, NodeStream
from inference.protocol import TranscriptionResult

logger = logging.getLogger(__name__)

# A break found while reading, away from the pool's view of its nodes: the wait the pool
# gives when it knows nothing sooner, at its default health interval.
BROKEN_STREAM_RETRY_AFTER_SECONDS = math.ceil(DEFAULT_NODE_HEALTH_INTERVAL_SECONDS)


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """Text the node has decoded; the deltas of a stream, joined, are its final text."""

    text: str


StreamedTranscript = AsyncIterator[TranscriptDelta | TranscriptionResult]


async def streamed_events(url: str, answer: NodeStream) -> StreamedTranscript:
    """The events of a node's 200 answer, up to its result."""
    try:
        async for event in _parsed(url, answer):
            yield event
    except FailedAfterSending as error:
        raise broken_stream(url, str(error)) from error


async def _parsed(url: str, answer: NodeStream) -> StreamedTranscript:
    async for line in answer.lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as error:
            raise broken_stream(url, f"not an NDJSON line: {line[:80]!r}") from error
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


def broken_stream(
    url: str, detail: str, retry_after_seconds: int = BROKEN_STREAM_RETRY_AFTER_SECONDS
) -> UpstreamUnavailable:
    """The error of a node's answer cut short (after it was sent, so never retried)."""
    logger.warning("node %s failed mid-stream: %s", url, detail)
    return UpstreamUnavailable(
        "The inference node did not complete the request. Retry later.",
        retry_after_seconds=retry_after_seconds,
    )

"""The node pool: requests to the inference nodes. Which node gets one, and what the gateway
knows of each (membership, health, least-outstanding choice), is ``registry.py``'s.

- Passive circuit breaker per node (``breaker.py``): connect errors, timeouts, transport errors and
  502/503/504 are failures.
- Retries: a connect error or a 502/503/504 moves the request to another node, at most
  ``node_max_attempts`` nodes. A transport error after the request was sent is never retried:
  the node may still be working on it. The caller bills nothing on any exception.
- Timeouts: base + factor * audio seconds, capped by ``node_timeout_seconds``, which also bounds
  the whole dispatch (reservations outlive it by a margin).
- Decoding: a request for audio measured at ``audio_ms`` tells the node the most the file may
  decode to (``max_audio_ms``, ``wire.decode_allowance_ms``); the node refuses a file that holds
  more, 400 invalid_audio, and nothing is billed.
- Streams (``transcribe_stream``): routed, retried and counted as above until a node starts
  answering; what a started stream yields, and how it fails, is ``streaming.py``'s.
- Live streams (``open_live``, online models): routed and retried the same way until a node
  opens one (``live.py``); the stream counts as one outstanding request of its node until it
  is closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import anyio

from gateway import metrics
from gateway.errors import GatewayError, ModelNotFound, UpstreamUnavailable
from gateway.nodes.client import FailedAfterSending, NodeResponse, NotSent
from gateway.nodes.errors import node_error
from gateway.nodes.live import NodeLiveStream, NotOpened, open_live_stream
from gateway.nodes.node import Node
from gateway.nodes.registry import NodeRegistry
from gateway.nodes.streaming import StreamedTranscript, broken_stream, streamed_events
from gateway.nodes.wire import (
    MultipartBody,
    decode_form,
    multipart_body,
    retry_after_header,
    transcribe_form,
)
from inference.protocol import (
    DETECT_LANGUAGE_PATH,
    TRANSCRIBE_LIVE_PATH,
    TRANSCRIBE_PATH,
    TRANSCRIBE_STREAM_PATH,
    LanguageDetection,
    TranscribeParams,
    TranscriptionResult,
)

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({502, 503, 504})


class _NotSent(Exception):
    """The request never reached the node, so another node may take it."""


@dataclass(slots=True)
class _Attempt:
    """One request to one node; the caller sets ``outcome`` (the metrics' label) as it learns."""

    outcome: str = "cancelled"  # unless the caller reaches an outcome


@contextmanager
def _attempt(node: Node, path: str) -> Iterator[_Attempt]:
    """The bookkeeping of one request to ``node``, whole or streamed: outstanding (and the
    half-open trial) while it runs, then its time and outcome in the upstream metrics."""
    node.outstanding += 1
    node.breaker.on_dispatch()
    started = time.perf_counter()
    attempt = _Attempt()
    try:
        yield attempt
    finally:
        node.outstanding -= 1
        node.breaker.on_finish()
        metrics.UPSTREAM_SECONDS.labels(node.url, path).observe(time.perf_counter() - started)
        metrics.UPSTREAM_REQUESTS.labels(node.url, attempt.outcome).inc()


class NodePool(NodeRegistry):
    """Sends requests to the nodes the registry chooses, with retries and timeouts."""

    # Dispatch

    def read_timeout_seconds(self, audio_ms: int | None, longest: float | None = None) -> float:
        """How long a node may take: base + factor * audio seconds, at most ``longest`` (the
        node timeout unless given)."""
        longest = longest or self.settings.node_timeout_seconds
        if audio_ms is None:
            return longest
        scaled = (
            self.settings.node_timeout_base_seconds
            + self.settings.node_timeout_per_audio_second * audio_ms / 1000
        )
        return min(longest, scaled)

    async def transcribe(
        self,
        audio: bytes,
        filename: str,
        content_type: str,
        params: TranscribeParams,
        *,
        audio_ms: int | None = None,
        timeout_seconds: float | None = None,
    ) -> TranscriptionResult:
        """The transcript from one node; ``audio_ms`` (the measured length) scales the timeout
        (None: the longest) and bounds what the node decodes. ``timeout_seconds`` replaces
        ``node_timeout_seconds`` as the longest the dispatch may take (asynchronous jobs, whose
        audio may be hours long)."""
        form = transcribe_form(params, audio_ms)
        body = multipart_body(form, "file", filename, audio, content_type)
        response = await self._dispatch(
            TRANSCRIBE_PATH,
            body,
            params.model,
            audio_ms,
            timeout_seconds=timeout_seconds,
        )
        return TranscriptionResult.model_validate_json(response.content)

    async def detect_language(
        self,
        audio: bytes,
        filename: str,
        content_type: str,
        model: str | None,
        *,
        audio_ms: int | None = None,
    ) -> LanguageDetection:
        """The spoken language, from one node, with the same routing and retries; ``audio_ms``
        (what the node listens to) bounds what it decodes."""
        form = {"model": model} if model else {}
        form.update(decode_form(audio_ms))
        body = multipart_body(form, "file", filename, audio, content_type)
        response = await self._dispatch(DETECT_LANGUAGE_PATH, body, model, audio_ms)
        return LanguageDetection.model_validate_json(response.content)

    @asynccontextmanager
    async def transcribe_stream(
        self,
        audio: bytes,
        filename: str,
        content_type: str,
        params: TranscribeParams,
        *,
        audio_ms: int | None = None,
    ) -> AsyncIterator[StreamedTranscript]:
        """The node's deltas and then its result, from the first node that starts answering;
        nodes are chosen and retried as for a whole transcript until then (``streaming.py``)."""
        self._refuse_unknown_model(params.model)
        form = transcribe_form(params, audio_ms)
        body = multipart_body(form, "file", filename, audio, content_type)
        headers = {**self.headers, "Content-Type": body.content_type}
        tried: set[Node] = set()
        failures: list[str] = []
        hints: list[float] = []
        model_missing: ModelNotFound | None = None
        while len(failures) < self.settings.node_max_attempts:
            node = await self._next_node(params.model, tried)
            if node is None:
                break
            tried.add(node)
            with _attempt(node, TRANSCRIBE_STREAM_PATH) as attempt:
                try:
                    async with self.client.stream(
                        f"{node.url}{TRANSCRIBE_STREAM_PATH}",
                        body.content,
                        headers,
                        read_timeout=self.read_timeout_seconds(audio_ms),
                        connect_timeout=self.settings.node_connect_timeout_seconds,
                    ) as answer:
                        attempt.outcome = f"{answer.status_code // 100}xx"
                        if answer.status_code in RETRYABLE_STATUSES:
                            self._record_failure(node)
                            failures.append(f"{node.url}: HTTP {answer.status_code}")
                            hints.extend(retry_after_header(await answer.response()))
                            continue
                        if not answer.is_success:
                            refusal = node_error(node.url, await answer.response())
                            self._record_answer(node)
                            if isinstance(refusal, ModelNotFound):
                                model_missing = refusal
                                continue
                            raise refusal
                        self._record_answer(node)
                        yield streamed_events(node.url, answer)
                        return
                except NotSent as error:
                    attempt.outcome = "pool_timeout" if error.pool_timeout else "connect_error"
                    if not error.pool_timeout:
                        self._record_failure(node)
                        self._set_health(node, ready=False, error=str(error), answered=False)
                    failures.append(f"{node.url}: {error}")
                    continue
                except FailedAfterSending as error:
                    attempt.outcome = "transport_error"
                    self._record_failure(node)
                    raise broken_stream(node.url, str(error), self._retry_after([])) from error
        if model_missing is not None and not failures:
            raise model_missing
        logger.warning(
            "no inference node could stream the request: %s", "; ".join(failures) or "no node"
        )
        raise UpstreamUnavailable(
            "No inference node is available to serve the request; nothing was billed. Retry later.",
            retry_after_seconds=self._retry_after(hints),
        )

    @asynccontextmanager
    async def open_live(self, params: TranscribeParams) -> AsyncIterator[NodeLiveStream]:
        """A live stream on a node serving the online model ``params.model``, closed on exit;
        nodes unreachable or turning it away for now are skipped as for a request."""
        self._refuse_unknown_model(params.model)
        tried: set[Node] = set()
        failures: list[str] = []
        while len(failures) < self.settings.node_max_attempts:
            node = await self._next_node(params.model, tried)
            if node is None:
                break
            tried.add(node)
            with _attempt(node, TRANSCRIBE_LIVE_PATH) as attempt:
                try:
                    stream = await open_live_stream(
                        node.url,
                        params,
                        self.headers,
                        connect_timeout=self.settings.node_connect_timeout_seconds,
                    )
                except NotOpened as error:
                    attempt.outcome = "connect_error"
                    self._record_failure(node)
                    failures.append(str(error))
                    continue
                except GatewayError:
                    attempt.outcome = "4xx"
                    self._record_answer(node)
                    raise
                attempt.outcome = "2xx"
                self._record_answer(node)
                try:
                    yield stream
                finally:
                    with anyio.CancelScope(shield=True):
                        await stream.close()
                return
        logger.warning("no inference node opened a live stream: %s", "; ".join(failures))
        raise UpstreamUnavailable(
            "No inference node can take a live stream now; nothing was billed. Retry later.",
            retry_after_seconds=self._retry_after([]),
        )

    async def _dispatch(
        self,
        path: str,
        body: MultipartBody,
        model: str | None,
        audio_ms: int | None,
        *,
        timeout_seconds: float | None = None,
    ) -> NodeResponse:
        """A successful response of one node to ``path``, trying others as the rules allow."""
        self._refuse_unknown_model(model)
        longest = timeout_seconds or self.settings.node_timeout_seconds
        deadline = self._clock() + longest
        tried: set[Node] = set()
        failures: list[str] = []
        retry_hints: list[float] = []
        model_missing: GatewayError | None = None
        while len(failures) < self.settings.node_max_attempts:
            node = await self._next_node(model, tried)
            remaining = deadline - self._clock()
            if node is None or remaining <= 0:
                break
            tried.add(node)
            read_timeout = min(self.read_timeout_seconds(audio_ms, longest), remaining)
            try:
                response = await self._send(node, path, body, read_timeout)
            except _NotSent as error:
                failures.append(f"{node.url}: {error}")
                continue
            if response.status_code in RETRYABLE_STATUSES:
                failures.append(f"{node.url}: HTTP {response.status_code}")
                retry_hints.extend(retry_after_header(response))
                continue
            if response.is_success:
                return response
            refusal = node_error(node.url, response)
            if isinstance(refusal, ModelNotFound):
                # Pools may be heterogeneous: another node may serve the model.
                model_missing = refusal
                continue
            raise refusal
        if model_missing is not None and not failures:
            raise model_missing
        logger.warning(
            "no inference node could serve the request: %s",
            "; ".join(failures) or "no eligible node",
        )
        raise UpstreamUnavailable(
            "No inference node is available to serve the request; nothing was billed. Retry later.",
            retry_after_seconds=self._retry_after(retry_hints),
        )

    async def _send(
        self,
        node: Node,
        path: str,
        body: MultipartBody,
        read_timeout: float,
    ) -> NodeResponse:
        with _attempt(node, path) as attempt:
            try:
                response = await self.client.post(
                    f"{node.url}{path}",
                    body.content,
                    {**self.headers, "Content-Type": body.content_type},
                    read_timeout=read_timeout,
                    connect_timeout=self.settings.node_connect_timeout_seconds,
                )
            except NotSent as error:
                if error.pool_timeout:
                    # The gateway's own connection pool is full: nothing reached the node.
                    attempt.outcome = "pool_timeout"
                    raise _NotSent(str(error)) from error
                attempt.outcome = "connect_error"
                self._record_failure(node)
                self._set_health(node, ready=False, error=str(error), answered=False)
                raise _NotSent(str(error)) from error
            except FailedAfterSending as error:
                attempt.outcome = "transport_error"
                self._record_failure(node)
                logger.warning("node %s failed mid-request: %r", node.url, error)
                raise UpstreamUnavailable(
                    "The inference node did not complete the request; nothing was billed. "
                    "Retry later.",
                    retry_after_seconds=self._retry_after([]),
                ) from error
            attempt.outcome = f"{response.status_code // 100}xx"
            if response.status_code in RETRYABLE_STATUSES:
                self._record_failure(node)
            else:
                self._record_answer(node)
            return response

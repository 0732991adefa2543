"""The node pool: which inference node gets a request, and what the gateway knows of each.

- Membership: the URLs of ``GATEWAY_NODES`` at start; ``add``, ``remove``, ``drain``,
  ``undrain`` while running (per gateway replica); the addresses of its DNS names as
  ``discovery.py`` finds them (``follow_discovered``).
- Health: ``run_health_checks`` polls each node's ``/health/ready``; a node that is not ready gets
  nothing until it is again. A refused connection marks a node unhealthy at once.
- Routing: least outstanding requests among eligible nodes, ties in rotation; nodes known not to
  serve the requested model are skipped.
- Passive circuit breaker per node (``breaker.py``): connect errors, timeouts, transport errors and
  502/503/504 are failures.
- Retries: a connect error or a 502/503/504 moves the request to another node, at most
  ``node_max_attempts`` nodes. A transport error after the request was sent is never retried:
  the node may still be working on it. The caller bills nothing on any exception.
- Timeouts: base + factor * audio seconds, capped by ``node_timeout_seconds``, which also bounds
  the whole dispatch (reservations outlive it by a margin).
- Streams (``transcribe_stream``): routed, retried and counted as above until a node starts
  answering; what a started stream yields, and how it fails, is ``streaming.py``'s.
- Live streams (``open_live``, online models): routed and retried the same way until a node
  opens one (``live.py``); the stream counts as one outstanding request of its node until it
  is closed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio

from gateway import metrics
from gateway.config import GatewaySettings
from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, UpstreamUnavailable
from gateway.nodes.breaker import CircuitBreaker, Clock
from gateway.nodes.client import FailedAfterSending, NodeClient, NodeResponse, NotSent
from gateway.nodes.errors import NodeNotFound, node_error
from gateway.nodes.live import NodeLiveStream, NotOpened, open_live_stream
from gateway.nodes.node import Node, NodeSource, NodeStatus, normalize_node_url
from gateway.nodes.streaming import StreamedTranscript, broken_stream, streamed_events
from gateway.nodes.wire import (
    MultipartBody,
    json_object,
    multipart_body,
    parse_models,
    retry_after_header,
    transcribe_form,
)
from inference.protocol import (
    DETECT_LANGUAGE_PATH,
    READY_PATH,
    TRANSCRIBE_LIVE_PATH,
    TRANSCRIBE_PATH,
    TRANSCRIBE_STREAM_PATH,
    LanguageDetection,
    ModelInfo,
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


class NodePool:
    def __init__(
        self,
        settings: GatewaySettings,
        client: NodeClient,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client = client
        self.headers = (
            {"Authorization": f"Bearer {settings.node_secret}"} if settings.node_secret else {}
        )
        self._clock = clock
        self._nodes: dict[str, Node] = {}
        self._rotation = 0
        for url in settings.node_urls:
            self._add(url, NodeSource.config)

    # Membership

    def add(self, url: str) -> NodeStatus:
        """Add a node; a URL already in the pool is left as it is."""
        return self._add(url, NodeSource.runtime).status()

    def remove(self, node: str) -> NodeStatus:
        """Take a node (id or URL) out at once; requests in flight on it still finish."""
        found = self._find(node)
        self._forget(found)
        return found.status()

    def follow_discovered(self, urls: Collection[str]) -> list[str]:
        """Make the pool's DNS-found nodes ``urls``: new ones join (unused until a health check
        finds them ready), departed ones that are back take requests again, and those no longer
        there depart: no new requests, and they leave once idle. Nodes of other sources at the
        same URLs are left as they are. Returns the URLs that joined."""
        joined: list[str] = []
        for url in sorted(urls):
            node = self._nodes.get(url)
            if node is None:
                self._add(url, NodeSource.dns)
                joined.append(url)
            elif node.departed:
                node.departed = False
                logger.info("node %s is back in DNS", url)
        for node in list(self._nodes.values()):
            if node.source is not NodeSource.dns or node.url in urls:
                continue
            if not node.departed:
                node.departed = True
                logger.info("node %s is gone from DNS: no new requests", node.url)
            if node.outstanding == 0:
                # Idle: nothing can be on it any more, since a departed node is never chosen.
                self._forget(node)
        return joined

    def drain(self, node: str) -> NodeStatus:
        """No new requests for the node; those in flight finish (``outstanding`` counts them)."""
        found = self._find(node)
        found.draining = True
        logger.info("node %s draining", found.url)
        return found.status()

    def undrain(self, node: str) -> NodeStatus:
        found = self._find(node)
        found.draining = False
        return found.status()

    def status(self, node: str) -> NodeStatus:
        return self._find(node).status()

    def snapshot(self) -> list[NodeStatus]:
        return [node.status() for node in self._nodes.values()]

    def _add(self, url: str, source: NodeSource) -> Node:
        url = normalize_node_url(url)
        node = self._nodes.get(url)
        if node is None:
            breaker = CircuitBreaker(
                self.settings.node_failure_threshold,
                self.settings.node_circuit_open_seconds,
                self._clock,
            )
            node = self._nodes[url] = Node(url, source, breaker)
            logger.info("node %s added to the pool (%s)", url, source)
        return node

    def _forget(self, node: Node) -> None:
        del self._nodes[node.url]
        metrics.forget_node(node.url)
        logger.info("node %s removed from the pool", node.url)

    def _find(self, node: str) -> Node:
        try:
            url = normalize_node_url(node)
        except InvalidRequest:
            url = node
        for candidate in self._nodes.values():
            if node == candidate.id or url == candidate.url:
                return candidate
        raise NodeNotFound(f"No node {node!r} in the pool.", param="node")

    # Health

    async def run_health_checks(self) -> None:
        """Check every node each interval until cancelled (the app's lifespan runs this)."""
        while True:
            try:
                await self.check_health()
            except Exception:
                logger.exception("node health check failed")
            await anyio.sleep(self.settings.node_health_interval_seconds)

    async def check_health(self, urls: Collection[str] | None = None) -> None:
        """One round of health checks, all nodes (or those at ``urls``) at once."""
        async with anyio.create_task_group() as checks:
            for node in list(self._nodes.values()):
                if urls is None or node.url in urls:
                    checks.start_soon(self._check, node)

    async def any_ready(self) -> bool:
        """Some node can take requests, by the last health checks."""
        await self._check_unchecked()
        return any(node.healthy and node.takes_new_requests for node in self._nodes.values())

    async def list_models(self) -> list[ModelInfo]:
        """Models of the ready nodes, from their last health checks."""
        await self._check_unchecked()
        models: dict[str, ModelInfo] = {}
        for node in self._nodes.values():
            if node.healthy and node.takes_new_requests:
                for info in node.models or []:
                    models.setdefault(info.id, info)
        return list(models.values())

    async def _check_unchecked(self) -> None:
        # Right after start or an add, before the background loop got to a node.
        if any(node.last_check_at is None for node in self._nodes.values()):
            await self.check_health()

    async def _check(self, node: Node) -> None:
        try:
            response = await self.client.get(
                f"{node.url}{READY_PATH}", timeout=self.settings.node_health_timeout_seconds
            )
        except (NotSent, FailedAfterSending) as error:
            node.last_check_at = datetime.now(UTC)
            self._set_health(node, ready=False, error=str(error))
            return
        body = json_object(response)
        models = parse_models(body.get("models"))
        if models is not None:
            node.models = models
        node.last_check_at = datetime.now(UTC)
        ready = response.status_code == 200
        reason = str(body.get("error") or body.get("status") or f"HTTP {response.status_code}")
        self._set_health(node, ready=ready, error=None if ready else reason)

    def _set_health(self, node: Node, *, ready: bool, error: str | None) -> None:
        if ready and node.healthy is False:
            logger.info("node %s is ready again", node.url)
        elif not ready and node.healthy is not False:
            logger.warning("node %s is not ready: %s", node.url, error)
        node.healthy = ready
        node.last_error = None if ready else error

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
        """The transcript from one node; ``audio_ms`` scales the timeout (None: the longest).
        ``timeout_seconds`` replaces ``node_timeout_seconds`` as the longest the dispatch may
        take (asynchronous jobs, whose audio may be hours long)."""
        body = multipart_body(transcribe_form(params), "file", filename, audio, content_type)
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
        """The spoken language, from one node, with the same routing and retries."""
        form = {"model": model} if model else {}
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
        body = multipart_body(transcribe_form(params), "file", filename, audio, content_type)
        headers = {**self.headers, "Content-Type": body.content_type}
        tried: set[Node] = set()
        failures: list[str] = []
        hints: list[float] = []
        model_missing: ModelNotFound | None = None
        while len(failures) < self.settings.node_max_attempts:
            node = self._choose(params.model, tried)
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
                            node.breaker.record_success()
                            if isinstance(refusal, ModelNotFound):
                                model_missing = refusal
                                continue
                            raise refusal
                        node.breaker.record_success()
                        yield streamed_events(node.url, answer)
                        return
                except NotSent as error:
                    attempt.outcome = "pool_timeout" if error.pool_timeout else "connect_error"
                    if not error.pool_timeout:
                        self._record_failure(node)
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
            node = self._choose(params.model, tried)
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
                    node.breaker.record_success()
                    raise
                attempt.outcome = "2xx"
                node.breaker.record_success()
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
            node = self._choose(model, tried)
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

    def _choose(self, model: str | None, tried: set[Node]) -> Node | None:
        candidates = [
            node
            for node in self._nodes.values()
            if node not in tried and node.eligible() and node.serves(model) is not False
        ]
        if not candidates:
            return None
        start = self._rotation % len(candidates)
        self._rotation += 1
        in_rotation = candidates[start:] + candidates[:start]
        return min(in_rotation, key=lambda node: node.outstanding)

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
                self._set_health(node, ready=False, error=str(error))
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
                node.breaker.record_success()
            return response

    def _record_failure(self, node: Node) -> None:
        if node.breaker.record_failure():
            logger.warning(
                "circuit of node %s open for %.1f s after %d consecutive failures",
                node.url,
                self.settings.node_circuit_open_seconds,
                node.breaker.consecutive_failures,
            )

    def _refuse_unknown_model(self, model: str | None) -> None:
        """404 without trying a node when every node's models are known and none has it."""
        known = [node.models for node in self._nodes.values()]
        if model is None or not known or any(models is None for models in known):
            return
        available = sorted({info.id for models in known for info in models or []})
        if model not in available:
            raise ModelNotFound(
                f"The model '{model}' does not exist; available: {', '.join(available)}.",
                param="model",
            )

    def _retry_after(self, hints: list[float]) -> int:
        """Seconds until a node may serve again: the earliest of the nodes' own Retry-After,
        a circuit half-opening, or the next health check of a node that is not ready."""
        waits = list(hints)
        for node in self._nodes.values():
            if not node.takes_new_requests:
                continue
            wait = node.breaker.seconds_until_half_open() or 0.0
            if node.healthy is False:
                wait = max(wait, self.settings.node_health_interval_seconds)
            if wait > 0:
                waits.append(wait)
        seconds = min(waits, default=self.settings.node_health_interval_seconds)
        return max(1, math.ceil(seconds))

"""What the gateway knows of its inference nodes, and which one gets the next request.

- Membership: the URLs of ``GATEWAY_NODES`` at start; ``add``, ``remove``, ``drain``,
  ``undrain`` while running (per gateway replica); the addresses of its DNS names as
  ``discovery.py`` finds them (``follow_discovered``).
- Health: ``run_health_checks`` polls each node's ``/health/ready``; a node that is not ready gets
  nothing until it is again. A refused connection marks a node unhealthy at once. A node marked
  unhealthy because it did not answer (refused, timed out: frozen, restarting, swamped) is
  ready again as soon as it answers anything, a request sent before or a health check; and a
  request, or a readiness probe, that finds no node eligible while such a node is out checks it
  again at once (one check at a time, and not within ``RECHECK_SECONDS`` of that node's last
  check) instead of waiting out the interval.
- Choice: least outstanding requests among eligible nodes, ties in rotation; nodes known not to
  serve the requested model are skipped; a node whose circuit (``breaker.py``) is open is not
  eligible.

``NodePool`` (``pool.py``) sends the requests.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection
from datetime import UTC, datetime

import anyio

from gateway import metrics
from gateway.config import GatewaySettings
from gateway.errors import InvalidRequest, ModelNotFound
from gateway.nodes.allowed import AllowedNodeHosts
from gateway.nodes.breaker import CircuitBreaker, Clock
from gateway.nodes.client import FailedAfterSending, NodeClient, NotSent
from gateway.nodes.errors import NodeNotFound
from gateway.nodes.node import Node, NodeSource, NodeStatus, normalize_node_url
from gateway.nodes.wire import json_object, parse_models
from inference.protocol import READY_PATH, ModelInfo

logger = logging.getLogger(__name__)

# A silent node is checked again on demand only this long after its last check ended.
RECHECK_SECONDS = 1.0


class NodeRegistry:
    """The nodes, their health, and the choice of one (see the module docstring)."""

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
        self.allowed_hosts = AllowedNodeHosts.from_settings(settings)
        self._nodes: dict[str, Node] = {}
        self._rotation = 0
        self._recheck_running: anyio.Event | None = None
        for url in settings.node_urls:
            self._add(url, NodeSource.config)

    # Membership

    def add(self, url: str) -> NodeStatus:
        """Add a node; a URL already in the pool is left as it is. NodeNotAllowed for a host
        the operator has not allowed (``allowed.py``): it is never contacted."""
        self.allowed_hosts.check(normalize_node_url(url))
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
        """Some node can take requests, by the last health checks; when none can, the nodes
        out only for not answering are checked again first (as a request would)."""
        await self._check_unchecked()
        if not self._any_ready():
            await self._recheck_silent_nodes()
        return self._any_ready()

    def _any_ready(self) -> bool:
        return any(node.ready for node in self._nodes.values())

    async def list_models(self) -> list[ModelInfo]:
        """Models of the ready nodes, from their last health checks."""
        await self._check_unchecked()
        models: dict[str, ModelInfo] = {}
        for node in self._nodes.values():
            if node.ready:
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
            self._stamp_check(node)
            self._set_health(node, ready=False, error=str(error), answered=False)
            return
        body = json_object(response)
        models = parse_models(body.get("models"))
        if models is not None:
            node.models = models
        self._stamp_check(node)
        ready = response.status_code == 200
        reason = str(body.get("error") or body.get("status") or f"HTTP {response.status_code}")
        self._set_health(node, ready=ready, error=None if ready else reason)

    def _stamp_check(self, node: Node) -> None:
        node.last_check_at = datetime.now(UTC)
        node.checked_on_clock = self._clock()

    def _set_health(
        self, node: Node, *, ready: bool, error: str | None, answered: bool = True
    ) -> None:
        """``answered``: whether the node said this itself (a readiness answer) rather than
        failing to answer at all."""
        if ready and node.healthy is False:
            logger.info("node %s is ready again", node.url)
        elif not ready and node.healthy is not False:
            logger.warning("node %s is not ready: %s", node.url, error)
        node.healthy = ready
        node.last_error = None if ready else error
        node.unanswered = not ready and not answered

    def _record_answer(self, node: Node) -> None:
        """The node answered a request (not with a 502/503/504): its circuit closes, and if it
        was out only for not answering, it is back."""
        node.breaker.record_success()
        if node.unanswered:
            self._set_health(node, ready=True, error=None)

    async def _next_node(self, model: str | None, tried: set[Node]) -> Node | None:
        """The node for the next attempt (``_choose``); when the first finds none while some
        node is out only for not answering, those are checked again first."""
        node = self._choose(model, tried)
        if node is None and not tried and await self._recheck_silent_nodes():
            node = self._choose(model, tried)
        return node

    async def _recheck_silent_nodes(self) -> bool:
        """Check the nodes out for not answering, now; requests arriving meanwhile wait for the
        same check. False (nothing checked) when there are none, or each one's last check ended
        less than ``RECHECK_SECONDS`` ago (a scheduled check that just failed is not repeated
        at once)."""
        running = self._recheck_running
        if running is not None:
            await running.wait()
            return True
        now = self._clock()
        silent = {
            node.url
            for node in self._nodes.values()
            if node.unanswered
            and node.takes_new_requests
            and (node.checked_on_clock is None or now - node.checked_on_clock >= RECHECK_SECONDS)
        }
        if not silent:
            return False
        running = self._recheck_running = anyio.Event()
        try:
            await self.check_health(silent)
        finally:
            self._recheck_running = None
            running.set()
        return True

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
        a circuit half-opening, or the next health check of a node that is not ready (for one
        out only for not answering, the next request's recheck of it)."""
        waits = list(hints)
        now = self._clock()
        for node in self._nodes.values():
            if not node.takes_new_requests:
                continue
            wait = node.breaker.seconds_until_half_open() or 0.0
            if node.healthy is False:
                next_check = self.settings.node_health_interval_seconds
                if node.unanswered and node.checked_on_clock is not None:
                    next_check = node.checked_on_clock + RECHECK_SECONDS - now
                wait = max(wait, next_check)
            if wait > 0:
                waits.append(wait)
        seconds = min(waits, default=self.settings.node_health_interval_seconds)
        return max(1, math.ceil(seconds))

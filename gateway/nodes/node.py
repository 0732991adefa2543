"""One inference node as the pool sees it, and the snapshot the admin API shows of it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import httpx
from pydantic import BaseModel, Field

from gateway.errors import InvalidRequest
from gateway.nodes.breaker import CircuitBreaker, CircuitState
from inference.protocol import ModelInfo


class NodeSource(StrEnum):
    config = "config"  # GATEWAY_NODES
    runtime = "runtime"  # added while running; forgotten on restart
    dns = "dns"  # an address of a GATEWAY_NODES DNS name (discovery.py); follows its answers


class NodeStatus(BaseModel):
    """A node's state at one moment."""

    id: str = Field(description="stable across gateway replicas: derived from the URL")
    url: str
    source: NodeSource
    healthy: bool | None = Field(description="last /health/ready answer; null before the first")
    draining: bool = Field(
        description="drained by an admin: no new requests, those in flight finish"
    )
    departed: bool = Field(
        description="found through DNS and gone from its answer: no new requests; it leaves the "
        "pool once those in flight finish"
    )
    outstanding: int = Field(description="requests in flight on this node from this gateway")
    consecutive_failures: int
    circuit: CircuitState
    circuit_half_opens_at: datetime | None = Field(description="when an open circuit half-opens")
    models: list[str] | None = Field(description="model ids from the last health check")
    last_check_at: datetime | None
    last_error: str | None


def normalize_node_url(url: str) -> str:
    url = url.strip().rstrip("/")
    try:
        parsed: httpx.URL | None = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in {"http", "https"} or not parsed.host:
        raise InvalidRequest(
            f"Node URL {url!r} must start with http:// or https:// and name a host.",
            param="url",
            code="invalid_node_url",
        )
    return url


def node_id(url: str) -> str:
    return "node_" + hashlib.sha256(url.encode()).hexdigest()[:10]


class Node:
    def __init__(self, url: str, source: NodeSource, breaker: CircuitBreaker) -> None:
        self.url = url
        self.id = node_id(url)
        self.source = source
        self.breaker = breaker
        self.healthy: bool | None = None
        self.draining = False
        self.departed = False
        self.outstanding = 0
        self.models: list[ModelInfo] | None = None
        self.last_check_at: datetime | None = None
        # When its last health check ended, on the registry's clock (what spaces the rechecks).
        self.checked_on_clock: float | None = None
        self.last_error: str | None = None
        # Unready because it did not answer (refused, timed out), not because it said so: a
        # later answer of any kind proves it up again (registry.py). Only ever true while
        # ``healthy`` is False.
        self.unanswered = False

    @property
    def takes_new_requests(self) -> bool:
        """Neither drained by an admin nor gone from DNS."""
        return not self.draining and not self.departed

    @property
    def ready(self) -> bool:
        """Ready by its last health check, and taking new requests."""
        return bool(self.healthy) and self.takes_new_requests

    def eligible(self) -> bool:
        """May get a new request now: taking new requests, not known unhealthy, circuit
        letting it. A node found through DNS is new to every replica: it waits for a ready
        answer to its first health check."""
        if not self.takes_new_requests or self.healthy is False:
            return False
        if self.healthy is None and self.source is NodeSource.dns:
            return False
        return self.breaker.allows_request()

    def serves(self, model: str | None) -> bool | None:
        """Whether the node serves ``model``; None while its models are unknown."""
        if self.models is None:
            return None
        return model is None or any(info.id == model for info in self.models)

    def status(self) -> NodeStatus:
        wait = self.breaker.seconds_until_half_open()
        return NodeStatus(
            id=self.id,
            url=self.url,
            source=self.source,
            healthy=self.healthy,
            draining=self.draining,
            departed=self.departed,
            outstanding=self.outstanding,
            consecutive_failures=self.breaker.consecutive_failures,
            circuit=self.breaker.state,
            circuit_half_opens_at=None if wait is None else datetime.now(UTC) + timedelta(0, wait),
            models=None if self.models is None else [info.id for info in self.models],
            last_check_at=self.last_check_at,
            last_error=self.last_error,
        )

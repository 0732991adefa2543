"""Prometheus objects of the gateway, all prefixed ``asrgw_``.

Labels take bounded values only: route templates, status classes, error codes, models,
currencies, node URLs (bounded by the pool) — never an API key, tenant or request id
(per-tenant numbers live in the ledger, and Grafana reads them there with SQL).

Three kinds of metrics:

- counted in this process as things happen (requests, upstream calls, cache, rate limits,
  billing), in the objects below;
- read from the node pool at scrape time (``PoolCollector``): health, draining, circuit,
  requests outstanding per node — a removed node's series go with it;
- read from the ledger at scrape time (``LedgerCollector``): reservations open and jobs waiting
  or running. These are fleet-wide numbers, the same on every replica: aggregate them with
  ``max()``, never ``sum()``.

Counters whose label values are all known in advance are created with every value at import,
so dashboards and alerts see 0 rather than no series at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import suppress
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from billing.models.types import utcnow
from billing.monitoring import repository as ledger_counts
from inference.protocol import DETECT_LANGUAGE_PATH, TRANSCRIBE_PATH, TRANSCRIBE_STREAM_PATH

if TYPE_CHECKING:
    from billing.db import Database
    from billing.usage.schemas import BillableTranscription, UsageCharge
    from gateway.nodes import NodePool

logger = logging.getLogger(__name__)

# No ``*_created`` series: they double the series count and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Speech requests take from milliseconds (a cache hit) to minutes (long audio on a busy node).
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# Requests, by what the route template, status class and error envelope say.

# ``route``: the matched route template ("/v1/jobs/{job_id}"), "unmatched" for paths no route
# serves; ``status``: "2xx" … "5xx"; ``code``: the error envelope's code, "none" on success.
REQUESTS = Counter(
    "asrgw_requests_total",
    "HTTP requests answered, by method, route template, status class and error code.",
    ["method", "route", "status", "code"],
)
REQUEST_SECONDS = Histogram(
    "asrgw_request_duration_seconds",
    "Time from a request's arrival to the end of its response.",
    ["method", "route"],
    buckets=SECONDS_BUCKETS,
)
# ``livesum``: with several worker processes (prometheus_client's multiprocess mode, see
# gateway.monitoring), the sum over the workers alive.
REQUESTS_IN_FLIGHT = Gauge(
    "asrgw_requests_in_flight", "HTTP requests being handled now.", multiprocess_mode="livesum"
)

# Upstream: each attempt of a dispatch to a node (a retried request counts once per node tried).

# ``node``: the node's URL; ``path``: the node endpoint ("/v1/transcribe", …).
UPSTREAM_SECONDS = Histogram(
    "asrgw_upstream_request_duration_seconds",
    "Time one dispatch attempt to an inference node took, until its response or its failure.",
    ["node", "path"],
    buckets=SECONDS_BUCKETS,
)
# ``outcome``: the node's status class ("2xx", "4xx", "5xx"), or "connect_error",
# "transport_error" (failed after the request was sent), "pool_timeout" (never sent),
# "cancelled" (the client went away while the node worked).
# Streamed transcriptions (SSE, stream=true).
OPEN_STREAMS = Gauge(
    "asrgw_open_streams",
    "Streamed transcriptions being sent now, by protocol.",
    ["protocol"],
    multiprocess_mode="livesum",
)
STREAMED_AUDIO_SECONDS = Counter(
    "asrgw_streamed_audio_seconds_total",
    "Seconds of audio of the streamed transcriptions that ended, by protocol and how they ended "
    "(completed, client_gone: billed for what was sent, failed).",
    ["protocol", "outcome"],
)

STREAM_PROTOCOLS = ("sse", "realtime", "funasr")
STREAM_OUTCOMES = ("completed", "client_gone", "failed")
for _protocol in STREAM_PROTOCOLS:  # every series exists from the start, at zero
    OPEN_STREAMS.labels(_protocol)
    for _outcome in STREAM_OUTCOMES:
        STREAMED_AUDIO_SECONDS.labels(_protocol, _outcome)

UPSTREAM_REQUESTS = Counter(
    "asrgw_upstream_requests_total",
    "Dispatch attempts to inference nodes, by outcome.",
    ["node", "outcome"],
)

# ``result``: "ok" (addresses found), "empty" (the name does not exist or has no records: its
# nodes depart), "error" (no answer: the last one is kept). One lookup per DNS name of
# GATEWAY_NODES per GATEWAY_NODE_DNS_REFRESH_SECONDS.
NODE_DNS_LOOKUPS = Counter(
    "asrgw_node_dns_lookups_total",
    "DNS lookups of the node names in GATEWAY_NODES, by result.",
    ["result"],
)
# Admission.

# ``limiter``: "requests" (the per-minute window) or "concurrency" (requests in flight).
RATE_LIMITER_ERRORS = Counter(
    "asrgw_rate_limiter_errors_total",
    "Rate-limit store (Redis) operations that failed; the request was then admitted or refused "
    "as GATEWAY_RATE_LIMIT_ON_STORE_ERROR says.",
    ["limiter"],
)

# ``limit``: "requests" (requests per minute) or "concurrency" (requests in flight).
RATE_LIMITED_REQUESTS = Counter(
    "asrgw_rate_limited_requests_total",
    "Requests refused with 429 rate_limit_exceeded.",
    ["limit"],
)
QUOTA_REJECTIONS = Counter(
    "asrgw_quota_rejections_total",
    "Requests refused with 402 insufficient_quota: the worst-case cost did not fit the "
    "tenant's remaining monthly quota or prepaid credit.",
)

# The result cache.

# ``result``: "hit" or "miss"; counted for cacheable requests when the cache is on.
CACHE_LOOKUPS = Counter(
    "asrgw_cache_lookups_total",
    "Result-cache lookups by outcome (hits are served without a node).",
    ["result"],
)
CACHE_BYTES = Gauge(
    "asrgw_cache_bytes",
    "Bytes of cached results held in this process (the in-memory store only).",
    multiprocess_mode="livesum",
)
# ``operation``: "get" or "put".
CACHE_ERRORS = Counter(
    "asrgw_cache_errors_total",
    "Result-cache store (Redis) operations that failed; the request went on without the cache.",
    ["operation"],
)

# Billing: what the ledger rows written by this process say, summed over tenants. The ledger is
# the record; these are for rates and dashboards (floats are exact to 2^53 micro-units).

# ``model``: the model that produced the transcript; ``cached``: "true" for cache hits.
OUTPUT_TOKENS = Counter(
    "asrgw_output_tokens_total",
    "Tokens in the transcripts returned and billed, before the plan's per-audio-second cap.",
    ["model", "cached"],
)
BILLED_TOKENS = Counter(
    "asrgw_billed_tokens_total",
    "Tokens billed (the ledger's billed_tokens).",
    ["model", "cached"],
)
BILLED_AUDIO_SECONDS = Counter(
    "asrgw_billed_audio_seconds_total",
    "Seconds of audio in billed requests (the ledger's audio_ms / 1000).",
    ["model", "cached"],
)
# ``currency``: the plan's ISO currency; amounts in different currencies never add up.
BILLED_MICROS = Counter(
    "asrgw_billed_micros_total",
    "Micro-units of currency billed (the ledger's cost_micros).",
    ["model", "currency", "cached"],
)

LEDGER_GAUGE_ERRORS = Counter(
    "asrgw_ledger_gauge_errors_total",
    "Scrapes whose ledger gauges (reservations open, jobs) could not be read; those gauges "
    "were left out of that scrape.",
)

for _limiter in ("requests", "concurrency"):
    RATE_LIMITER_ERRORS.labels(limiter=_limiter)
    RATE_LIMITED_REQUESTS.labels(limit=_limiter)
for _result in ("hit", "miss"):
    CACHE_LOOKUPS.labels(result=_result)
for _operation in ("get", "put"):
    CACHE_ERRORS.labels(operation=_operation)
for _result in ("ok", "empty", "error"):
    NODE_DNS_LOOKUPS.labels(result=_result)


def record_charge(billable: BillableTranscription, charge: UsageCharge) -> None:
    """Count one settled ledger row (call after its transaction committed)."""
    cached = "true" if billable.cached else "false"
    OUTPUT_TOKENS.labels(billable.model, cached).inc(charge.output_tokens)
    BILLED_TOKENS.labels(billable.model, cached).inc(charge.billed_tokens)
    BILLED_AUDIO_SECONDS.labels(billable.model, cached).inc(charge.audio_ms / 1000)
    BILLED_MICROS.labels(billable.model, charge.currency, cached).inc(charge.cost_micros)


UPSTREAM_PATHS = (TRANSCRIBE_PATH, TRANSCRIBE_STREAM_PATH, DETECT_LANGUAGE_PATH)
UPSTREAM_OUTCOMES: tuple[str, ...] = ("2xx", "3xx", "4xx", "5xx", "connect_error")
UPSTREAM_OUTCOMES += ("transport_error", "pool_timeout", "cancelled")


def forget_node(url: str) -> None:
    """Drop the upstream series of a node taken out of the pool."""
    series: list[tuple[Counter | Histogram, str]] = [
        (UPSTREAM_SECONDS, path) for path in UPSTREAM_PATHS
    ]
    series += [(UPSTREAM_REQUESTS, outcome) for outcome in UPSTREAM_OUTCOMES]
    for metric, label in series:
        with suppress(KeyError):
            metric.remove(url, label)


# Scrape-time metrics: (name, help, label names). Their collectors build them from these.
Family = tuple[str, str, list[str]]

NODE_HEALTHY: Family = (
    "asrgw_node_healthy",
    "1 when the node's last /health/ready check answered ready (0 before the first check).",
    ["node"],
)
NODE_DRAINING: Family = (
    "asrgw_node_draining",
    "1 while the node takes no new requests: drained by an admin, or gone from its DNS name.",
    ["node"],
)
NODE_CIRCUIT_OPEN: Family = (
    "asrgw_node_circuit_open",
    "1 while the node's circuit breaker is open or half-open after consecutive failures.",
    ["node"],
)
NODE_OUTSTANDING: Family = (
    "asrgw_node_outstanding_requests",
    "Requests this gateway process has in flight on the node.",
    ["node"],
)
NODES_READY: Family = (
    "asrgw_nodes_ready",
    "Nodes that may take a request now: ready, not draining, circuit closed or half-open.",
    [],
)
RESERVATIONS_OPEN: Family = (
    "asrgw_reservations_open",
    "Reservations held in the ledger (requests being worked, or gateways that died before "
    "settling until the sweeper frees them); fleet-wide: aggregate with max().",
    [],
)
RESERVATIONS_EXPIRED: Family = (
    "asrgw_reservations_expired",
    "Reservations still open past their expiry (their gateway stopped renewing them and no "
    "sweeper has released them yet); fleet-wide: aggregate with max().",
    [],
)
JOBS: Family = (
    "asrgw_jobs",
    "Asynchronous jobs in the ledger by state (queued, processing); fleet-wide: aggregate "
    "with max().",
    ["state"],
)
ACTIVE_JOB_STATES = ("queued", "processing")


def _family(family: Family) -> GaugeMetricFamily:
    name, documentation, labels = family
    return GaugeMetricFamily(name, documentation, labels=labels)


class PoolCollector(Collector):
    """The node pool's state as this replica sees it, read at scrape time."""

    FAMILIES = (NODE_HEALTHY, NODE_DRAINING, NODE_CIRCUIT_OPEN, NODE_OUTSTANDING, NODES_READY)

    def __init__(self, pool: NodePool) -> None:
        self.pool = pool

    def describe(self) -> Iterator[Metric]:
        return (_family(family) for family in self.FAMILIES)

    def collect(self) -> Iterator[Metric]:
        healthy, draining, circuit_open, outstanding, ready = self.describe()
        assert isinstance(ready, GaugeMetricFamily)
        ready_count = 0
        for node in self.pool.snapshot():
            is_open = node.circuit != "closed"
            for family, value in (
                (healthy, node.healthy is True),
                (draining, node.draining or node.departed),
                (circuit_open, is_open),
                (outstanding, node.outstanding),
            ):
                assert isinstance(family, GaugeMetricFamily)
                family.add_metric([node.url], float(value))
            takes_new = not node.draining and not node.departed
            if node.healthy and takes_new and node.circuit != "open":
                ready_count += 1
        ready.add_metric([], ready_count)
        yield from (healthy, draining, circuit_open, outstanding, ready)


class LedgerCollector(Collector):
    """Counts read from the ledger at scrape time (cheap, index-backed queries). A failed read
    leaves these gauges out of the scrape and counts ``asrgw_ledger_gauge_errors_total``."""

    FAMILIES = (RESERVATIONS_OPEN, RESERVATIONS_EXPIRED, JOBS)

    def __init__(self, database: Database) -> None:
        self.database = database

    def describe(self) -> Iterator[Metric]:
        return (_family(family) for family in self.FAMILIES)

    def collect(self) -> Iterator[Metric]:
        try:
            with self.database.engine.connect() as connection:
                reservations_open = ledger_counts.open_reservations(connection)
                reservations_expired = ledger_counts.expired_reservations(connection, utcnow())
                jobs = ledger_counts.jobs_by_state(connection, ACTIVE_JOB_STATES)
        except Exception:
            logger.exception("could not read the ledger gauges")
            LEDGER_GAUGE_ERRORS.inc()
            return
        reservations, expired, jobs_family = self.describe()
        assert isinstance(reservations, GaugeMetricFamily)
        assert isinstance(expired, GaugeMetricFamily)
        assert isinstance(jobs_family, GaugeMetricFamily)
        reservations.add_metric([], reservations_open)
        expired.add_metric([], reservations_expired)
        for state in ACTIVE_JOB_STATES:
            jobs_family.add_metric([state], jobs.get(state, 0))
        yield reservations
        yield expired
        yield jobs_family

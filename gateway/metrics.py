"""Prometheus objects of the gateway, all prefixed ``asrgw_``.

Labels take bounded values only: never an API key, tenant or request id (per-tenant numbers live
in the ledger).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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

# ``result``: "hit" or "miss"; counted for cacheable requests when the cache is on.
CACHE_LOOKUPS = Counter(
    "asrgw_cache_lookups_total",
    "Result-cache lookups by outcome (hits are served without a node).",
    ["result"],
)
CACHE_BYTES = Gauge(
    "asrgw_cache_bytes",
    "Bytes of cached results held in this process (the in-memory store only).",
)
# ``operation``: "get" or "put".
CACHE_ERRORS = Counter(
    "asrgw_cache_errors_total",
    "Result-cache store (Redis) operations that failed; the request went on without the cache.",
    ["operation"],
)

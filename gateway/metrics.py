"""Prometheus objects of the gateway, all prefixed ``asrgw_``.

Labels take bounded values only: never an API key, tenant or request id (per-tenant numbers live
in the ledger).
"""

from __future__ import annotations

from prometheus_client import Counter

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

"""Per-API-key rate limits from the caller's plan (docs/api.md, "Rate limits").

```
window.py       requests per minute: a moving window kept by `limits`
concurrency.py  requests in flight: a counter in memory, leased slots in Redis
store.py        memory by default, Redis (GATEWAY_REDIS_URL) across replicas
service.py      RateLimits.admit / release: the order of checks, the store-error policy
headers.py      x-ratelimit-* on every response of a rate-limited route
dependency.py   RateLimitedKey, the one-line dependency of the billed routes
```
"""

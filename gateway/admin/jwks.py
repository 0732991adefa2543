"""The signing keys of an identity provider's JWKS, fetched and refetched at a bounded rate.

A token whose ``kid`` is not among the cached keys may mean the provider rotated its keys, so it
triggers a refetch; but anyone can send tokens with made-up ``kid`` values, so such refetches
happen at most once per ``GATEWAY_ADMIN_JWKS_REFETCH_SECONDS`` per URL, whether they succeed or
fail. Concurrent requests share one fetch (a lock), and an unknown ``kid`` in between is refused
(401) without touching the network. Keys older than ``lifespan_seconds`` are refreshed under the
same limit, and kept if the refresh fails: an outage of the provider does not lock admins out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from gateway.errors import AdminAuthError, AuthUnavailable

logger = logging.getLogger(__name__)

# The provider's keys are refreshed this often even when every kid is known (rotation).
JWKS_LIFESPAN_SECONDS = 300.0


class JwksKeys:
    """The signing keys of one JWKS URL, by ``kid``. Thread-safe: admin routes verify tokens in
    FastAPI's worker threads."""

    def __init__(
        self,
        url: str,
        *,
        refetch_seconds: float,
        lifespan_seconds: float = JWKS_LIFESPAN_SECONDS,
        timeout_seconds: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refetch_seconds = refetch_seconds
        self.lifespan_seconds = lifespan_seconds
        self.clock = clock
        # No redirects: the configured URL is the only place keys may come from.
        self._client = httpx.Client(
            transport=transport, timeout=timeout_seconds, follow_redirects=False
        )
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last fetch that succeeded
        self._attempted_at: float | None = None  # the last fetch, whatever its outcome
        self._lock = threading.Lock()

    def key_for(self, kid: str | None) -> Any:
        """The public key for ``kid``: AdminAuthError (401) when the provider does not publish it,
        AuthUnavailable (503) when no key could be fetched at all."""
        with self._lock:
            now = self.clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self.lifespan_seconds
            if (stale or kid not in self._keys) and self._may_fetch(now):
                self._fetch(now)
            key = self._keys.get(kid) if kid else None
            if key is not None:
                return key.key
            if not self._keys and self._fetched_at is None:
                raise AuthUnavailable(
                    "The identity provider's signing keys could not be fetched; retry later."
                )
            raise AdminAuthError(f"No signing key matches this token: unknown kid {kid!r}.")

    def close(self) -> None:
        self._client.close()

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.refetch_seconds

    def _fetch(self, now: float) -> None:
        self._attempted_at = now
        try:
            response = self._client.get(self.url)
            response.raise_for_status()
            key_set = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as error:
            # Logged, not raised: keys fetched before stay valid until the next allowed try.
            logger.warning("JWKS fetch from %s failed: %s", self.url, error)
            return
        self._keys = {
            key.key_id: key
            for key in key_set.keys
            if key.key_id and key.public_key_use in ("sig", None)
        }
        self._fetched_at = now

"""Valid API keys, remembered briefly per process so a busy key costs no database lookup.

Only successes are kept, for ``ttl_seconds`` at most and never past the key's own expiry; a
revoked or rotated-out key is therefore refused by every replica within ``ttl_seconds``.
Entries are found by the SHA-256 of the presented key, so the cache holds no secrets.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from billing.keys.schemas import AuthenticatedKey
from billing.models.types import utcnow


class KeyCache:
    def __init__(
        self,
        ttl_seconds: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, AuthenticatedKey]] = OrderedDict()
        # Dependencies run in worker threads.
        self._lock = threading.Lock()

    @staticmethod
    def _digest(presented: str) -> str:
        return hashlib.sha256(presented.encode()).hexdigest()

    def get(self, presented: str) -> AuthenticatedKey | None:
        if self.ttl_seconds <= 0:
            return None
        digest = self._digest(presented)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            stored_at, caller = entry
            expired = caller.expires_at is not None and caller.expires_at <= utcnow()
            if self.clock() - stored_at >= self.ttl_seconds or expired:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return caller

    def put(self, presented: str, caller: AuthenticatedKey) -> None:
        if self.ttl_seconds <= 0:
            return
        digest = self._digest(presented)
        with self._lock:
            self._entries[digest] = (self.clock(), caller)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def evict(self, key_prefix: str) -> None:
        """Forget a key at once in this process (it was revoked or rotated here)."""
        with self._lock:
            for digest in [d for d, (_, c) in self._entries.items() if c.key_prefix == key_prefix]:
                del self._entries[digest]

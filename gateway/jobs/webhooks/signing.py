"""Webhook signatures: ``X-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.

The body carries the same Unix ``timestamp`` as the ``X-Webhook-Timestamp`` header, so the
signature covers it: a receiver that checks the signature and then the timestamp against its
clock (``REPLAY_WINDOW_SECONDS``) refuses a captured delivery replayed later. Each attempt is
signed afresh with its own timestamp; the event ``id`` stays the same across attempts, for the
receiver to drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
EVENT_ID_HEADER = "X-Webhook-Id"
EVENT_HEADER = "X-Webhook-Event"
REPLAY_WINDOW_SECONDS = 300


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def signature(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: str,
    body: bytes,
    signature_header: str,
    timestamp_header: str,
    *,
    now: float | None = None,
    window_seconds: int = REPLAY_WINDOW_SECONDS,
) -> bool:
    """What a receiver does: the signature matches the body, the body's timestamp is the
    header's, and it is within the replay window of ``now``."""
    if not hmac.compare_digest(signature(secret, body), signature_header):
        return False
    try:
        stated = int(json.loads(body)["timestamp"])
        header = int(timestamp_header)
    except (ValueError, KeyError, TypeError):
        return False
    now = time.time() if now is None else now
    return stated == header and abs(now - stated) <= window_seconds

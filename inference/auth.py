"""The node's one caller check: the gateway's shared secret as a bearer token."""

from __future__ import annotations

import hmac

from inference.config import InferenceSettings
from inference.errors import Unauthorized


def check_node_secret(settings: InferenceSettings, authorization: str | None) -> None:
    """The gateway's bearer secret, on every route that serves it (HTTP and WebSocket); any
    caller when the node has none (loopback development)."""
    if not settings.node_secret:
        return
    presented = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(presented.encode(), settings.node_secret.encode()):
        raise Unauthorized("This node requires the shared node secret as a bearer token.")

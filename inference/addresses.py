"""Which bind addresses only this machine can reach; the standard library alone, so the gateway
shares the rule (``GatewaySettings.unsafe_to_bind``) with the node."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1. Everything else (0.0.0.0 and :: included, which listen
    on every interface) is reachable from elsewhere, and so is a name other than localhost."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False

"""What one client's attempts count under, for the per-address throttles (console sign-in, API
key guesses): an IPv4 address (also when mapped into IPv6), or an IPv6 address's /64, which is
what one subscriber is usually given."""

from __future__ import annotations

import ipaddress


def address_group(address: str | None) -> str:
    try:
        parsed = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if isinstance(parsed, ipaddress.IPv4Address):
        return str(parsed)
    return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False))

"""Whether an IP address is one a webhook may reach: pure, no I/O.

An IPv6 address that carries an IPv4 address reaches that IPv4 host (through a translator, a
tunnel or the kernel's own mapping), so it is judged by the IPv4 address it carries; otherwise a
customer could reach 127.0.0.1 as ``::127.0.0.1``, 169.254.169.254 as ``64:ff9b::a9fe:a9fe`` or
as ``2002:a9fe:a9fe::``. Our own tables rather than ``ipaddress.is_global`` alone decide, because
the latter's answers change between Python versions (3.11 calls ``3fff::/20`` and
``fec0::/10`` global).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_V6 = ipaddress.IPv6Network
IPV4_COMPATIBLE = _V6("::/96")  # deprecated (RFC 4291); :: and ::1 are judged as themselves
IPV4_TRANSLATED = _V6("::ffff:0:0:0/96")  # SIIT (RFC 2765)
NAT64_WELL_KNOWN = _V6("64:ff9b::/96")  # RFC 6052
NAT64_LOCAL_USE = _V6("64:ff9b:1::/48")  # RFC 8215: sub-prefixes of any RFC 6052 length
# Unicast outside 2000::/3 is reserved, unique-local, link-local, site-local or multicast.
GLOBAL_UNICAST = _V6("2000::/3")
REFUSED_IPV6 = (
    _V6("::/128"),  # unspecified
    _V6("::1/128"),  # loopback
    _V6("2001::/23"),  # IETF protocol assignments (Teredo, 2001::/32, is unwrapped first)
    _V6("2001:db8::/32"),  # documentation
    _V6("3fff::/20"),  # documentation (RFC 9637)
)
# RFC 6052 prefix lengths that fit inside the local-use /48, and where each puts the IPv4
# address: (the bit where its first part ends, that part's width), then the same for the part
# after the reserved octet u (bits 64-71).
NAT64_LAYOUTS = {
    48: ((64, 16), (88, 16)),
    56: ((64, 8), (96, 24)),
    64: ((104, 32), (0, 0)),
    96: ((128, 32), (0, 0)),
}
NON_PUBLIC = "is a private, loopback or otherwise non-public address"


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address ``address`` may lead to; empty when it embeds none."""
    value = int(address)
    if address in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")):
        return []
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in IPV4_COMPATIBLE or address in IPV4_TRANSLATED or address in NAT64_WELL_KNOWN:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        server, client = address.teredo
        return [server, client]
    if address in NAT64_LOCAL_USE:
        # Which length an operator chose is not visible in the address: every reading counts.
        return [_nat64(value, layout) for layout in NAT64_LAYOUTS.values()]
    return []


def _nat64(value: int, layout: tuple[tuple[int, int], tuple[int, int]]) -> ipaddress.IPv4Address:
    (first_end, first_bits), (second_end, second_bits) = layout
    first = (value >> (128 - first_end)) & ((1 << first_bits) - 1)
    second = (value >> (128 - second_end)) & ((1 << second_bits) - 1) if second_bits else 0
    return ipaddress.IPv4Address((first << second_bits) | second)


def refusal(address: Address, *, allow_private: bool, deny: Sequence[Network] = ()) -> str | None:
    """Why ``address`` may not be called (a phrase for the error message), or None."""
    judged: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        judged += embedded_ipv4(address)
    for candidate in judged:
        if any(candidate.version == network.version and candidate in network for network in deny):
            return _phrase(address, candidate, "is refused by this gateway's policy")
    if allow_private:
        return None
    carried = judged[1:]
    for candidate in carried or judged:
        if not _public(candidate):
            return _phrase(address, candidate, NON_PUBLIC)
    return None


def _public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        return address.is_global and not address.is_multicast
    if address not in GLOBAL_UNICAST or any(address in network for network in REFUSED_IPV6):
        return False
    return address.is_global


def _phrase(address: Address, candidate: Address, verdict: str) -> str:
    if candidate == address:
        return f"{address} {verdict}"
    return f"{address} carries {candidate}, which {verdict}"

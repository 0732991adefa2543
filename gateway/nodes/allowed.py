"""Which hosts a node registered at run time (``POST /admin/nodes``) may be at.

The gateway sends every node its secret as a bearer token, and customers' audio: a node URL is a
destination for both. So an admin token with ``nodes:write`` may only add nodes at hosts the
operator already trusts: the hosts of ``GATEWAY_NODES`` (its URLs and its DNS names), loopback
in development, and ``GATEWAY_NODE_ALLOWED_HOSTS`` (host names, ``*.suffix`` wildcards,
CIDRs). The admin API refuses any other host before the URL is stored or contacted, and every
replica skips a stored registration whose host is no longer allowed (``membership.py``), so it
is never sent the secret or audio. Nodes of ``GATEWAY_NODES`` and the addresses of its DNS names
are the operator's own and are not judged here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import httpx

from gateway.config import DNS_NODES_PREFIX, GatewaySettings
from gateway.nodes.errors import NodeNotAllowed
from inference.addresses import is_loopback_host

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allowed_host(entry: str) -> str | IPNetwork:
    """An address or CIDR as a network; a host name or ``*.suffix`` as it is (lower case).
    ValueError for a malformed CIDR."""
    entry = entry.strip().lower()
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        if "/" in entry:
            raise
        return entry


@dataclass(frozen=True)
class AllowedNodeHosts:
    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[IPNetwork, ...]
    loopback: bool

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> AllowedNodeHosts:
        entries = [httpx.URL(url).host for url in settings.node_urls]
        entries += [
            httpx.URL(entry.removeprefix(DNS_NODES_PREFIX)).host
            for entry in settings.node_dns_entries
        ]
        entries += [entry for entry in settings.node_allowed_hosts.split(",") if entry.strip()]
        parsed = [parse_allowed_host(entry) for entry in entries]
        return cls(
            names=frozenset(
                entry for entry in parsed if isinstance(entry, str) and not entry.startswith("*.")
            ),
            suffixes=tuple(
                entry[1:] for entry in parsed if isinstance(entry, str) and entry.startswith("*.")
            ),
            networks=tuple(entry for entry in parsed if not isinstance(entry, str)),
            loopback=settings.environment == "development",
        )

    def allows(self, url: str) -> bool:
        host = httpx.URL(url).host.lower()
        if self.loopback and is_loopback_host(host):
            return True
        if host in self.names or host.endswith(self.suffixes):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def check(self, url: str) -> None:
        """NodeNotAllowed (403 node_not_allowed) unless ``url``'s host is allowed."""
        if not self.allows(url):
            raise NodeNotAllowed(
                f"Nodes at {httpx.URL(url).host!r} are not allowed: the host must be one of "
                "GATEWAY_NODES or match GATEWAY_NODE_ALLOWED_HOSTS.",
                param="url",
            )

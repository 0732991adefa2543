"""Nodes found through DNS: a ``GATEWAY_NODES`` entry ``dns+http://NAME:PORT`` stands for every
address NAME resolves to (its A and AAAA records), re-read every
``GATEWAY_NODE_DNS_REFRESH_SECONDS``.

On Kubernetes NAME is the nodes' headless Service, whose records are the ready pods of the node
StatefulSet, so scaling it needs no gateway restart:

- an address that appears joins the pool as ``http://ADDRESS:PORT`` and gets no request before a
  health check finds it ready;
- an address that disappears is departed: it gets no new requests, those in flight on it finish,
  and it leaves the pool (and its metric series go) at the first refresh that finds it idle; if
  it comes back before that, it simply takes requests again;
- a name that does not exist, or has no records, is an answer: its nodes depart. A lookup that
  fails (the resolver cannot be reached, a timeout) is not: the last answer is kept.

The resolver is injected (``Resolver``), so tests decide what names resolve to.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Protocol

import anyio
import httpx

from gateway import metrics
from gateway.config import DNS_NODES_PREFIX, GatewaySettings
from gateway.nodes.pool import NodePool

logger = logging.getLogger(__name__)

# getaddrinfo's "this name does not exist / has no address", as opposed to "could not ask".
LOOKUP_TIMEOUT_SECONDS = 10.0
NO_SUCH_NAME = frozenset({socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)})


class DnsLookupFailed(Exception):
    """The resolver gave no answer (unreachable, timed out): the name's nodes are kept."""


class Resolver(Protocol):
    async def addresses(self, name: str) -> list[str]:
        """The IPv4 and IPv6 addresses of ``name``; [] when it does not exist or has none.
        Raises ``DnsLookupFailed`` when the question could not be answered."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``: /etc/hosts, then DNS), asked anew on
    every lookup; glibc keeps no cache of its own."""

    async def addresses(self, name: str) -> list[str]:
        try:
            answers = await anyio.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            if error.errno in NO_SUCH_NAME:
                return []
            raise DnsLookupFailed(f"{name}: {error.strerror}") from error
        return sorted({str(sockaddr[0]) for *_, sockaddr in answers})


@dataclass(frozen=True)
class DnsNodeName:
    """One ``dns+http://NAME[:PORT][/PATH]`` entry of ``GATEWAY_NODES``."""

    entry: str
    url: httpx.URL

    @classmethod
    def parse(cls, entry: str) -> DnsNodeName:
        entry = entry.strip()
        url = httpx.URL(entry.removeprefix(DNS_NODES_PREFIX))
        return cls(entry, url)

    @property
    def name(self) -> str:
        return self.url.host

    def node_url(self, address: str) -> str:
        """The node at one of the name's addresses: the entry with the address for the name."""
        return str(self.url.copy_with(host=address)).rstrip("/")


class NodeDiscovery:
    """Keeps the pool's DNS-found nodes equal to what the names resolve to."""

    def __init__(
        self,
        pool: NodePool,
        names: list[DnsNodeName],
        resolver: Resolver,
        refresh_seconds: float,
    ) -> None:
        self.pool = pool
        self.names = names
        self.resolver = resolver
        self.refresh_seconds = refresh_seconds
        # The last answer of each name, as node URLs; a failed lookup leaves its entry alone.
        self._answers: dict[DnsNodeName, set[str]] = {}

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, pool: NodePool, resolver: Resolver | None = None
    ) -> NodeDiscovery | None:
        """Discovery of the DNS names of GATEWAY_NODES; None when it has none."""
        names = [DnsNodeName.parse(entry) for entry in settings.node_dns_entries]
        if not names:
            return None
        return cls(pool, names, resolver or SystemResolver(), settings.node_dns_refresh_seconds)

    async def refresh(self) -> None:
        """Look every name up once and bring the pool in line; nodes that joined are checked
        at once, so they take requests as soon as they are ready rather than a health interval
        later."""
        for name in self.names:
            try:
                # A resolver that hangs must not hold up the other names' answers for long.
                with anyio.fail_after(LOOKUP_TIMEOUT_SECONDS):
                    addresses = await self.resolver.addresses(name.name)
            except (DnsLookupFailed, TimeoutError) as error:
                metrics.NODE_DNS_LOOKUPS.labels("error").inc()
                logger.warning(
                    "DNS lookup of nodes %s failed, keeping the last answer: %r", name.entry, error
                )
                continue
            metrics.NODE_DNS_LOOKUPS.labels("ok" if addresses else "empty").inc()
            if not addresses and self._answers.get(name):
                logger.warning("%s has no addresses any more: its nodes are draining", name.name)
            self._answers[name] = {name.node_url(address) for address in addresses}
        wanted: set[str] = set().union(*self._answers.values())
        joined = self.pool.follow_discovered(wanted)
        if joined:
            await self.pool.check_health(joined)

    async def run(self) -> None:
        """Refresh every interval until cancelled (the app's lifespan runs this)."""
        while True:
            try:
                await self.refresh()
            except Exception:
                logger.exception("node discovery failed; keeping the current nodes")
            await anyio.sleep(self.refresh_seconds)

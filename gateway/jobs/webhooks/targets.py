"""Which webhook URLs the gateway will call: http(s) only, and public addresses only unless
``GATEWAY_WEBHOOK_ALLOW_PRIVATE`` is set, so a customer cannot make the gateway reach into its
own network (loopback, private ranges, link-local cloud metadata, …); addresses in
``GATEWAY_WEBHOOK_DENY_CIDRS`` are refused even then. ``addresses.py`` judges an address.

A name is resolved when the job is submitted and again before each delivery, and the delivery
connects to the very address that was checked (the name still goes in ``Host`` and TLS SNI),
so a DNS answer that changes in between cannot redirect it. With ``GATEWAY_WEBHOOK_PROXY_URL``
the proxy connects and resolves: the gateway judges only what the URL itself says (an address
literal, a ``localhost`` name), and checking what a name resolves to is the proxy's duty.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self
from urllib.parse import SplitResult, urlsplit

from gateway.config import GatewaySettings
from gateway.errors import InvalidRequest
from gateway.jobs.webhooks.addresses import Address, Network, refusal

MAX_URL_LENGTH = 2048
# The host's addresses for a TCP connection (socket.getaddrinfo, or a stand-in in tests).
Resolver = Callable[[str, int], list[str]]


class UnsafeWebhookUrl(InvalidRequest):
    code = "invalid_webhook_url"


@dataclass(frozen=True)
class TargetPolicy:
    allow_private: bool = False
    deny: tuple[Network, ...] = ()
    # A proxy resolves names: the gateway then never does.
    via_proxy: bool = False

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Self:
        return cls(
            allow_private=settings.webhook_allow_private,
            deny=tuple(settings.webhook_deny_networks),
            via_proxy=bool(settings.webhook_proxy_url),
        )


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    host: str
    # None when a proxy resolves the name.
    address: Address | None

    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address."""
        if self.address is None:
            return self.url
        parts = urlsplit(self.url)
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        netloc = f"{host}:{parts.port}" if parts.port else host
        return parts._replace(netloc=netloc).geturl()

    def host_header(self) -> str:
        parts = urlsplit(self.url)
        return parts.netloc.rsplit("@", 1)[-1]


def parse_url(url: str) -> SplitResult:
    """The URL's parts; ``UnsafeWebhookUrl`` when it is not an absolute http(s) URL."""
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(f"webhook_url is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise _refuse("webhook_url is not a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise _refuse("webhook_url must be an http:// or https:// URL.")
    if not parts.hostname:
        raise _refuse("webhook_url has no host.")
    if parts.username is not None or parts.password is not None:
        raise _refuse("webhook_url must not carry credentials; use webhook_secret to verify.")
    return parts


def resolve(url: str, policy: TargetPolicy, resolver: Resolver | None = None) -> WebhookTarget:
    """Check ``url`` and pick the address to call (blocking: resolves the name)."""
    parts = parse_url(url)
    host = parts.hostname or ""
    literal = _literal(host)
    if policy.via_proxy:
        if literal is None and _is_localhost(host):
            raise _refuse(f"The webhook host {host!r} is this machine; such targets are refused.")
        addresses = [] if literal is None else [literal]
    elif literal is not None:
        addresses = [literal]
    else:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = _resolve_name(host, port, resolver or _system_resolver)
    for address in addresses:
        reason = refusal(address, allow_private=policy.allow_private, deny=policy.deny)
        if reason is not None:
            raise _refuse(f"The webhook host {host!r} is refused: {reason}.")
    return WebhookTarget(url=url, host=host, address=addresses[0] if addresses else None)


def _resolve_name(host: str, port: int, resolver: Resolver) -> list[Address]:
    try:
        addresses = [_address(raw) for raw in resolver(host, port)]
    except (OSError, UnicodeError, ValueError):
        raise _refuse(f"The webhook host {host!r} could not be resolved.") from None
    if not addresses:
        raise _refuse(f"The webhook host {host!r} could not be resolved.")
    return addresses


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _literal(host: str) -> Address | None:
    """The address ``host`` spells, including the forms the C resolver still reads as IPv4
    (``127.1``, ``0x7f.0.0.1``, ``2130706433``), which a proxy would connect to."""
    try:
        return _address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, UnicodeError, ValueError):
        return None


def _is_localhost(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def _address(raw: str) -> Address:
    # A scoped IPv6 address (fe80::1%eth0) carries its zone after '%'.
    return ipaddress.ip_address(raw.split("%", 1)[0])


def _refuse(message: str) -> UnsafeWebhookUrl:
    return UnsafeWebhookUrl(message, param="webhook_url")

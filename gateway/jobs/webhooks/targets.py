"""Which webhook URLs the gateway will call: http(s) only, and public addresses only unless
``GATEWAY_WEBHOOK_ALLOW_PRIVATE`` is set, so a customer cannot make the gateway reach into its
own network (loopback, private ranges, link-local cloud metadata, …).

A name is resolved when the job is submitted and again before each delivery, and the delivery
connects to the very address that was checked (the name still goes in ``Host`` and TLS SNI),
so a DNS answer that changes in between cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from gateway.errors import InvalidRequest

MAX_URL_LENGTH = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeWebhookUrl(InvalidRequest):
    code = "invalid_webhook_url"


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    host: str
    address: Address

    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address."""
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


def resolve(url: str, *, allow_private: bool) -> WebhookTarget:
    """Check ``url`` and pick the address to call (blocking: resolves the name)."""
    parts = parse_url(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _refuse(f"The webhook host {host!r} could not be resolved.") from None
    addresses = [_address(str(info[4][0])) for info in infos]
    if not addresses:
        raise _refuse(f"The webhook host {host!r} could not be resolved.")
    if not allow_private:
        refused = [address for address in addresses if not is_public(address)]
        if refused:
            raise _refuse(
                f"The webhook host {host!r} resolves to a private, loopback or otherwise "
                f"non-public address ({refused[0]}); such targets are refused."
            )
    return WebhookTarget(url=url, host=host, address=addresses[0])


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _address(raw: str) -> Address:
    # A scoped IPv6 address (fe80::1%eth0) carries its zone after '%'.
    return ipaddress.ip_address(raw.split("%", 1)[0])


def _refuse(message: str) -> UnsafeWebhookUrl:
    return UnsafeWebhookUrl(message, param="webhook_url")

"""Every IPv6 form that carries an IPv4 address is judged by that address; the special ranges
of both families are refused; operators' deny-CIDRs apply to every form."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.jobs.webhooks.addresses import embedded_ipv4, refusal

PUBLIC_V4 = "93.184.215.14"  # 5db8:d70e

# (address, why it is allowed)
ALLOWED = [
    (PUBLIC_V4, "public IPv4"),
    ("8.8.8.8", "public IPv4"),
    ("192.0.0.9", "the one global address of 192.0.0.0/24"),
    ("2606:4700::1111", "global unicast"),
    ("2001:4860:4860::8888", "global unicast outside 2001::/23"),
    ("::ffff:93.184.215.14", "IPv4-mapped, public"),
    ("::93.184.215.14", "IPv4-compatible, public"),
    ("::ffff:0:5db8:d70e", "IPv4-translated, public"),
    ("2002:5db8:d70e::1", "6to4, public"),
    ("2001:0:5db8:d70e:0:0:a247:f1f1", "Teredo: public server 93.184.215.14, client 93.184.14.14"),
    ("64:ff9b::5db8:d70e", "NAT64 well-known prefix, public"),
    ("64:ff9b:1:5db8:8:d70e:5db8:d70e", "NAT64 local-use, public however it is read"),
]

# (address, the IPv4 address it carries or None, why it is refused)
REFUSED = [
    ("127.0.0.1", None, "loopback"),
    ("10.1.2.3", None, "RFC 1918"),
    ("172.16.5.4", None, "RFC 1918"),
    ("192.168.0.10", None, "RFC 1918"),
    ("100.64.0.1", None, "carrier-grade NAT"),
    ("169.254.169.254", None, "link-local, cloud metadata"),
    ("0.0.0.0", None, "this network"),
    ("198.18.0.1", None, "benchmarking"),
    ("240.0.0.1", None, "reserved"),
    ("255.255.255.255", None, "broadcast"),
    ("224.0.0.1", None, "multicast"),
    ("::", None, "unspecified"),
    ("::1", None, "loopback"),
    ("fe80::1", None, "link-local"),
    ("fec0::1", None, "site-local (Python 3.11 calls it global)"),
    ("fd00::1", None, "unique-local"),
    ("ff02::1", None, "multicast"),
    ("ff0e::1", None, "global-scope multicast"),
    ("100::1", None, "discard-only 100::/64"),
    ("2001:db8::1", None, "documentation"),
    ("3fff::1", None, "documentation, RFC 9637 (Python 3.11 calls it global)"),
    ("2001:2::1", None, "IETF protocol assignments, benchmarking"),
    ("5f00::1", None, "SRv6 SIDs, outside 2000::/3"),
    ("::ffff:127.0.0.1", "127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", "10.0.0.1", "IPv4-mapped private"),
    ("::127.0.0.1", "127.0.0.1", "IPv4-compatible loopback"),
    ("::169.254.169.254", "169.254.169.254", "IPv4-compatible metadata"),
    ("::ffff:0:127.0.0.1", "127.0.0.1", "IPv4-translated loopback"),
    ("::ffff:0:a9fe:a9fe", "169.254.169.254", "IPv4-translated metadata"),
    ("2002:7f00:1::1", "127.0.0.1", "6to4 of loopback"),
    ("2002:a9fe:a9fe::", "169.254.169.254", "6to4 of metadata"),
    ("2002:c0a8:1::1", "192.168.0.1", "6to4 of RFC 1918"),
    ("2001:0:5db8:d70e:0:0:80ff:fffe", "127.0.0.1", "Teredo, client loopback (XOR 0xffffffff)"),
    ("2001:0:a9fe:a9fe:0:0:a247:f1f1", "169.254.169.254", "Teredo, server metadata"),
    ("64:ff9b::a9fe:a9fe", "169.254.169.254", "NAT64 well-known of metadata"),
    ("64:ff9b::7f00:1", "127.0.0.1", "NAT64 well-known of loopback"),
    ("64:ff9b:1:a9fe:a9:fe00::", "169.254.169.254", "NAT64 local-use /48 of metadata"),
    ("64:ff9b:1::7f00:1", "127.0.0.1", "NAT64 local-use, a /96 sub-prefix, of loopback"),
    ("64:ff9b:1:0:7f:0:100::", "127.0.0.1", "NAT64 local-use, a /64 sub-prefix, of loopback"),
]


class TestBuiltInRules:
    @pytest.mark.parametrize(("address", "why"), ALLOWED)
    def test_allowed(self, address: str, why: str) -> None:
        assert refusal(ipaddress.ip_address(address), allow_private=False) is None, why

    @pytest.mark.parametrize(("address", "carried", "why"), REFUSED)
    def test_refused(self, address: str, carried: str | None, why: str) -> None:
        ip = ipaddress.ip_address(address)
        reason = refusal(ip, allow_private=False)
        assert reason is not None, why
        assert "non-public" in reason
        if carried is not None:
            assert isinstance(ip, ipaddress.IPv6Address)
            assert carried in [str(ipv4) for ipv4 in embedded_ipv4(ip)]
            assert f"{ip} carries " in reason, reason

    @pytest.mark.parametrize(("address", "carried", "why"), REFUSED)
    def test_allow_private_lifts_them(self, address: str, carried: str | None, why: str) -> None:
        assert refusal(ipaddress.ip_address(address), allow_private=True) is None, (why, carried)


class TestEmbeddedIPv4:
    @pytest.mark.parametrize(
        ("address", "carried"),
        [
            ("::ffff:1.2.3.4", ["1.2.3.4"]),
            ("::1.2.3.4", ["1.2.3.4"]),
            ("::ffff:0:1.2.3.4", ["1.2.3.4"]),
            ("2002:102:304:5::6", ["1.2.3.4"]),
            # Teredo: the server in bits 32-64, the client in the last 32 bits inverted.
            ("2001:0:102:304:8000:f227:fefd:fcfb", ["1.2.3.4", "1.2.3.4"]),
            ("64:ff9b::102:304", ["1.2.3.4"]),
            # Local use: read as every RFC 6052 length that fits the /48 (48, 56, 64, 96).
            (
                "64:ff9b:1:102:3:400::",
                ["1.2.3.4", "2.3.4.0", "3.4.0.0", "0.0.0.0"],
            ),
            ("2606:4700::1111", []),
            ("::", []),
            ("::1", []),
        ],
    )
    def test_every_form_is_unwrapped(self, address: str, carried: list[str]) -> None:
        found = embedded_ipv4(ipaddress.IPv6Address(address))
        assert [str(ipv4) for ipv4 in found] == carried


class TestDenyCIDRs:
    DENY = (ipaddress.ip_network("93.184.215.0/24"), ipaddress.ip_network("2606:4700::/32"))

    @pytest.mark.parametrize(
        "address",
        [
            "93.184.215.14",
            "::ffff:93.184.215.14",
            "2002:5db8:d70e::1",
            "64:ff9b::5db8:d70e",
            "2001:0:5db8:d70e:0:0:a247:f1f1",
            "2606:4700::1111",
        ],
    )
    def test_denied_in_every_form_even_with_allow_private(self, address: str) -> None:
        for allow_private in (False, True):
            reason = refusal(
                ipaddress.ip_address(address), allow_private=allow_private, deny=self.DENY
            )
            assert reason is not None
            assert "refused by this gateway's policy" in reason

    def test_other_addresses_stay_allowed(self) -> None:
        assert refusal(ipaddress.ip_address("8.8.8.8"), allow_private=False, deny=self.DENY) is None
        assert refusal(ipaddress.ip_address("10.0.0.1"), allow_private=True, deny=self.DENY) is None

"""The operator's controls over webhook targets: deny-CIDRs on top of the built-in rules, and
an egress proxy that resolves names in the gateway's place."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from billing.db import Database
from billing.migrate import upgrade_to_head
from gateway.config import GatewaySettings
from gateway.jobs.webhooks.targets import TargetPolicy, UnsafeWebhookUrl, resolve
from tests.fixtures.factories import create_tenant_with_key
from tests.gateway.conftest import gateway_settings
from tests.gateway.jobs.conftest import FakeNode, fake_node_gateway, submit

PROXY = TargetPolicy(via_proxy=True)


def unreachable(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host}:{port} was resolved although a proxy resolves names")


class TestThroughAProxy:
    def test_a_name_is_left_to_the_proxy(self) -> None:
        target = resolve("https://hooks.example.com/asr", PROXY, unreachable)
        assert target.address is None
        assert target.pinned_url() == "https://hooks.example.com/asr"
        assert target.host_header() == "hooks.example.com"

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1/x",
            "http://[::127.0.0.1]:8000/x",
            "http://[64:ff9b::a9fe:a9fe]/latest",
            "http://[2002:7f00:1::1]:8000/x",
            "http://2130706433/x",
            "http://0x7f.1/x",
            "http://localhost/x",
            "http://LOCALHOST./x",
            "http://api.localhost/x",
        ],
    )
    def test_what_the_url_itself_says_is_still_judged(self, url: str) -> None:
        with pytest.raises(UnsafeWebhookUrl) as refused:
            resolve(url, PROXY, unreachable)
        assert refused.value.code == "invalid_webhook_url"

    def test_a_public_literal_is_sent_to_as_written(self) -> None:
        target = resolve("http://93.184.215.14:8080/x", PROXY, unreachable)
        assert target.address == ipaddress.ip_address("93.184.215.14")


class TestSettings:
    def test_deny_cidrs_are_parsed_with_host_bits_forgiven(self) -> None:
        settings = gateway_settings("http://n:1", webhook_deny_cidrs="10.1.2.3/8, 2606:4700::/32")
        assert [str(network) for network in settings.webhook_deny_networks] == [
            "10.0.0.0/8",
            "2606:4700::/32",
        ]
        policy = TargetPolicy.from_settings(settings)
        assert policy.deny == tuple(settings.webhook_deny_networks)
        assert not policy.via_proxy

    @pytest.mark.parametrize(
        "overrides",
        [
            {"webhook_deny_cidrs": "10.0.0.0/8,not-a-network"},
            {"webhook_proxy_url": "socks9://proxy:1080"},
            {"webhook_proxy_url": "http://"},
        ],
    )
    def test_bad_values_stop_the_gateway_from_starting(self, overrides: dict[str, str]) -> None:
        with pytest.raises(ValidationError):
            gateway_settings("http://n:1", **overrides)

    def test_the_environment_names(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_WEBHOOK_DENY_CIDRS", "93.184.215.0/24")
        monkeypatch.setenv("GATEWAY_WEBHOOK_PROXY_URL", "http://egress.internal:3128")
        monkeypatch.setenv("GATEWAY_WEBHOOK_SENDERS", "8")
        settings = GatewaySettings(nodes="http://n:1", node_secret="s" * 32)
        assert settings.webhook_deny_cidrs == "93.184.215.0/24"
        assert settings.webhook_proxy_url == "http://egress.internal:3128"
        assert settings.webhook_senders == 8


class TestAtSubmission:
    @pytest.mark.parametrize(
        ("url", "overrides", "status"),
        [
            # Denied by the operator even where private targets are allowed.
            ("http://127.0.0.1:9/x", {"webhook_deny_cidrs": "127.0.0.0/8"}, 400),
            ("http://[::ffff:0:7f00:1]:9/x", {"webhook_deny_cidrs": "127.0.0.0/8"}, 400),
            # Through a proxy the gateway does not resolve: an unknown name is accepted ...
            ("http://hooks.invalid/x", {"webhook_proxy_url": "http://127.0.0.1:9"}, 201),
            # ... and without one it must resolve.
            ("http://hooks.invalid/x", {}, 400),
        ],
    )
    def test_policy_at_submission(
        self,
        sqlite_url: str,
        tmp_path: Path,
        weather_wav: Path,
        url: str,
        overrides: dict[str, str],
        status: int,
    ) -> None:
        upgrade_to_head(sqlite_url)
        database = Database(sqlite_url)
        try:
            key = create_tenant_with_key(database, "acme")
            with fake_node_gateway(
                FakeNode(), database, tmp_path / "audio", job_workers=0, **overrides
            ) as client:
                response = submit(client, key, weather_wav.read_bytes(), webhook_url=url)
            assert response.status_code == status, response.text
            if status == 400:
                assert response.json()["error"]["code"] == "invalid_webhook_url"
                assert response.json()["error"]["param"] == "webhook_url"
        finally:
            database.dispose()

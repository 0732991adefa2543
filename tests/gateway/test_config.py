"""Gateway settings that are refused at start-up rather than misread later."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config import GatewaySettings
from tests.gateway.admin_client import admin_settings


class TestTrustedProxies:
    def test_addresses_and_networks_are_what_uvicorn_is_given(self) -> None:
        settings = admin_settings(forwarded_allow_ips=" 10.0.0.5, 10.42.0.0/16,fd00::/8 ,")
        assert settings.trusted_proxies == ["10.0.0.5", "10.42.0.0/16", "fd00::/8"]
        assert admin_settings().trusted_proxies == []  # no one is believed by default

    @pytest.mark.parametrize("entry", ["loadbalancer", "10.0.0.300", "10.42.0.1/16", "*"])
    def test_anything_else_is_refused(self, entry: str) -> None:
        with pytest.raises(ValidationError, match="is not an IP address or network"):
            admin_settings(forwarded_allow_ips=f"10.0.0.5,{entry}")


class TestSignInLimits:
    @pytest.mark.parametrize("field", ["console_sign_in_limit", "console_sign_in_account_limit"])
    def test_a_limit_that_does_not_parse_is_refused(self, field: str) -> None:
        with pytest.raises(ValidationError, match="is not a limit like 5/minute"):
            admin_settings(**{field: "five a minute"})

    def test_the_password_check_bound_needs_one_slot_at_least(self) -> None:
        with pytest.raises(ValidationError, match="greater than or equal to 1"):
            GatewaySettings(console_password_checks=0)

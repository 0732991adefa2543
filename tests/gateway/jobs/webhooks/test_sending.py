"""One attempt: the target judged after resolution and connected to as judged, a deadline over
the whole attempt, a capped response body, and the operator's egress proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from gateway.config import GatewaySettings
from gateway.jobs.webhooks.sending import RESPONSE_BODY_BYTES, build_client, post
from tests.gateway.conftest import gateway_settings
from tests.gateway.jobs.webhooks.peers import (
    dripping_receiver,
    endless_body_receiver,
    forward_proxy,
    quick_receiver,
)

HEADERS = {"Content-Type": "application/json"}


def settings(**overrides: Any) -> GatewaySettings:
    return gateway_settings("http://127.0.0.1:9", **overrides)


class Resolver:
    """DNS answers in turn, the last one repeated; counts the lookups."""

    def __init__(self, *answers: list[str], port: int = 80) -> None:
        self.answers = list(answers)
        self.port = port
        self.lookups = 0

    def __call__(self, host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.com", self.port)
        self.lookups += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Recorder:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200)


@pytest.mark.anyio
class TestResolutionAtDelivery:
    @pytest.mark.parametrize(
        ("answer", "carried"),
        [
            ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
            ("::7f00:1", "127.0.0.1"),
            ("2002:7f00:1::1", "127.0.0.1"),
            ("2001:0:5db8:d70e:0:0:80ff:fffe", "127.0.0.1"),
        ],
    )
    async def test_a_name_resolving_to_a_wrapped_internal_address_is_refused(
        self, answer: str, carried: str
    ) -> None:
        recorder = Recorder()
        async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
            outcome = await post(
                client,
                "http://hooks.example.com/asr",
                b"{}",
                HEADERS,
                settings(),
                resolver=Resolver([answer]),
            )
        assert outcome.status_code is None
        assert not outcome.succeeded
        assert outcome.error is not None
        assert f"carries {carried}" in outcome.error
        assert recorder.requests == []

    async def test_it_connects_to_the_address_it_judged_not_to_a_second_answer(self) -> None:
        # A rebinding name: public when judged, loopback on any later lookup.
        resolver = Resolver(["93.184.215.14"], ["127.0.0.1"], port=8443)
        recorder = Recorder()
        async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
            outcome = await post(
                client,
                "https://hooks.example.com:8443/asr",
                b"{}",
                HEADERS,
                settings(),
                resolver=resolver,
            )
        assert outcome.succeeded
        [request] = recorder.requests
        assert request.url.host == "93.184.215.14"
        assert request.headers["Host"] == "hooks.example.com:8443"
        assert request.extensions["sni_hostname"] == "hooks.example.com"
        assert resolver.lookups == 1


@pytest.mark.anyio
class TestDeadline:
    async def test_a_receiver_that_never_answers_costs_one_deadline(self) -> None:
        async def never(_request: httpx.Request) -> httpx.Response:
            await anyio.Event().wait()
            raise AssertionError("unreachable")

        async with httpx.AsyncClient(transport=httpx.MockTransport(never)) as client:
            outcome = await post(
                client,
                "http://93.184.215.14/asr",
                b"{}",
                HEADERS,
                settings(webhook_timeout_seconds=0.2),
            )
        assert outcome.status_code is None
        assert outcome.error == "Timeout: no answer within 0.2 s"

    async def test_a_dripping_answer_does_not_outlive_the_deadline(self) -> None:
        # Each byte comes well within any per-read timeout; only a total deadline ends it.
        with dripping_receiver() as receiver:
            options = settings(webhook_timeout_seconds=0.5, webhook_allow_private=True)
            async with build_client(options) as client:
                outcome = await post(client, receiver.url, b"{}", HEADERS, options)
            assert outcome.error == "Timeout: no answer within 0.5 s"
            assert outcome.status_code is None
            assert receiver.hung_up.wait(10)


@pytest.mark.anyio
class TestResponseBody:
    async def test_an_endless_body_is_read_only_up_to_the_cap(self) -> None:
        pulled = 0

        async def endless() -> AsyncIterator[bytes]:
            nonlocal pulled
            while True:
                pulled += 1
                yield b"x" * 1024

        def handler(_request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=endless())

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            outcome = await post(client, "http://93.184.215.14/asr", b"{}", HEADERS, settings())
        assert outcome.succeeded
        assert outcome.error is None
        assert pulled <= RESPONSE_BODY_BYTES // 1024 + 1

    async def test_an_endless_body_over_the_network_succeeds_and_is_hung_up_on(self) -> None:
        with endless_body_receiver() as receiver:
            options = settings(webhook_timeout_seconds=60, webhook_allow_private=True)
            async with build_client(options) as client:
                outcome = await post(client, receiver.url, b"{}", HEADERS, options)
            assert outcome.status_code == 200
            assert outcome.succeeded
            assert receiver.hung_up.wait(10)


@pytest.mark.anyio
class TestEgressProxy:
    async def test_deliveries_go_through_the_proxy(self) -> None:
        with quick_receiver() as receiver, forward_proxy() as proxy:
            options = settings(webhook_proxy_url=proxy.url, webhook_allow_private=True)
            async with build_client(options) as client:
                outcome = await post(client, receiver.url, b'{"hello":1}', HEADERS, options)
            assert outcome.status_code == 204
            assert proxy.requested == [receiver.url]
            assert receiver.bodies == [b'{"hello":1}']

    async def test_the_proxy_does_not_excuse_an_internal_literal(self) -> None:
        with quick_receiver() as receiver, forward_proxy() as proxy:
            options = settings(webhook_proxy_url=proxy.url)
            async with build_client(options) as client:
                outcome = await post(client, receiver.url, b"{}", HEADERS, options)
            assert outcome.status_code is None
            assert outcome.error is not None
            assert "127.0.0.1 is a private, loopback" in outcome.error
            assert proxy.requested == []

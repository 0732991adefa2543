"""Nodes found through DNS (``dns+http://NAME:PORT`` in GATEWAY_NODES): a resolver the test
scripts plays the headless Service whose answers change as the node StatefulSet scales, against
nodes faked with ``httpx.MockTransport``; then the system resolver and a real node process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import ValidationError

from billing.config import BillingSettings
from billing.db import Database
from billing.migrate import upgrade_to_head
from gateway import metrics
from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.errors import UpstreamUnavailable
from gateway.nodes import NodePool, NodeSource, NodeStatus
from gateway.nodes.client import HttpxNodeClient
from gateway.nodes.discovery import DnsLookupFailed, DnsNodeName, NodeDiscovery, SystemResolver
from gateway.nodes.membership import apply_membership
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import create_tenant_with_key
from tests.gateway.admin_client import admin_client, admin_settings, bearer, token
from tests.gateway.test_node_pool import FakeClock, FakeNodes, eventually, held, transcribe

pytestmark = pytest.mark.anyio

NAME = "asrgw-node-headless.asrgw.svc.cluster.local"
ENTRY = f"dns+http://{NAME}:8001"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ScriptedResolver:
    """A DNS server whose answers the test sets: name → addresses."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.unreachable = False
        self.lookups: list[str] = []

    async def addresses(self, name: str) -> list[str]:
        self.lookups.append(name)
        if self.unreachable:
            raise DnsLookupFailed(f"{name}: no server could be reached")
        return list(self.answers.get(name, []))


def node(address: str) -> str:
    return f"http://{address}:8001"


@asynccontextmanager
async def discovered_pool(
    nodes: FakeNodes, resolver: ScriptedResolver, entries: str = ENTRY
) -> AsyncIterator[tuple[NodePool, NodeDiscovery]]:
    settings = GatewaySettings(nodes=entries)
    async with HttpxNodeClient(nodes.transport) as client:
        pool = NodePool(settings, client, clock=FakeClock())
        discovery = NodeDiscovery.from_settings(settings, pool, resolver)
        assert discovery is not None
        yield pool, discovery


def by_url(pool: NodePool) -> dict[str, NodeStatus]:
    return {status.url: status for status in pool.snapshot()}


async def served_by(pool: NodePool, requests: int) -> list[str]:
    return [(await transcribe(pool)).text.removeprefix("served by ") for _ in range(requests)]


def lookups(result: str) -> float:
    value = REGISTRY.get_sample_value("asrgw_node_dns_lookups_total", {"result": result})
    return value or 0.0


class TestScaling:
    async def test_the_addresses_of_the_name_are_the_nodes(self) -> None:
        resolver = ScriptedResolver({NAME: ["10.1.0.1", "10.1.0.2"]})
        async with discovered_pool(FakeNodes(), resolver) as (pool, discovery):
            assert pool.snapshot() == []
            await discovery.refresh()
            listed = by_url(pool)
            assert sorted(listed) == [node("10.1.0.1"), node("10.1.0.2")]
            assert {(status.source, status.healthy) for status in listed.values()} == {
                (NodeSource.dns, True)
            }
            assert await served_by(pool, 4) == ["10.1.0.1", "10.1.0.2"] * 2
        assert resolver.lookups == [NAME]

    async def test_a_new_address_gets_no_request_before_a_health_check_finds_it_ready(
        self,
    ) -> None:
        nodes = FakeNodes()
        resolver = ScriptedResolver({NAME: ["10.1.0.1"]})
        async with discovered_pool(nodes, resolver) as (pool, discovery):
            await discovery.refresh()
            # Joined but not yet checked (the moment between a refresh and its health check).
            assert pool.follow_discovered({node("10.1.0.1"), node("10.1.0.2")}) == [
                node("10.1.0.2")
            ]
            assert by_url(pool)[node("10.1.0.2")].healthy is None
            assert await served_by(pool, 3) == ["10.1.0.1"] * 3
            await pool.check_health([node("10.1.0.2")])
            assert sorted(await served_by(pool, 2)) == ["10.1.0.1", "10.1.0.2"]

            # A pod scaled up but still loading its model.
            nodes.ready_status["10.1.0.3"] = 503
            resolver.answers[NAME] = ["10.1.0.1", "10.1.0.2", "10.1.0.3"]
            await discovery.refresh()
            assert by_url(pool)[node("10.1.0.3")].healthy is False
            assert sorted(await served_by(pool, 4)) == ["10.1.0.1"] * 2 + ["10.1.0.2"] * 2

            nodes.ready_status["10.1.0.3"] = 200
            await pool.check_health()
            assert "10.1.0.3" in await served_by(pool, 3)

    async def test_a_node_gone_from_dns_finishes_its_requests_and_gets_no_new_ones(
        self,
    ) -> None:
        nodes = FakeNodes()
        release = anyio.Event()
        nodes.transcribe["10.1.0.1"] = held(release)
        resolver = ScriptedResolver({NAME: ["10.1.0.1", "10.1.0.2"]})
        results: list[str] = []

        async def send() -> None:
            results.append((await transcribe(pool)).text)

        async with (
            discovered_pool(nodes, resolver) as (pool, discovery),
            anyio.create_task_group() as requests,
        ):
            await discovery.refresh()
            requests.start_soon(send)
            await eventually(lambda: nodes.calls == ["10.1.0.1"])

            resolver.answers[NAME] = ["10.1.0.2"]  # the StatefulSet scaled down
            await discovery.refresh()
            leaving = by_url(pool)[node("10.1.0.1")]
            assert (leaving.departed, leaving.draining, leaving.outstanding) == (True, False, 1)
            assert await served_by(pool, 3) == ["10.1.0.2"] * 3

            release.set()
            await eventually(lambda: results == ["served by 10.1.0.1"])
            await discovery.refresh()
            assert list(by_url(pool)) == [node("10.1.0.2")]

    async def test_a_departed_node_that_comes_back_before_leaving_takes_requests_again(
        self,
    ) -> None:
        nodes = FakeNodes()
        release = anyio.Event()
        nodes.transcribe["10.1.0.1"] = held(release)
        resolver = ScriptedResolver({NAME: ["10.1.0.1"]})
        async with (
            discovered_pool(nodes, resolver) as (pool, discovery),
            anyio.create_task_group() as requests,
        ):
            await discovery.refresh()
            requests.start_soon(transcribe, pool)
            await eventually(lambda: nodes.calls == ["10.1.0.1"])
            resolver.answers[NAME] = []
            await discovery.refresh()
            assert by_url(pool)[node("10.1.0.1")].departed is True
            with pytest.raises(UpstreamUnavailable):
                await transcribe(pool)

            resolver.answers[NAME] = ["10.1.0.1"]
            await discovery.refresh()
            assert by_url(pool)[node("10.1.0.1")].departed is False
            release.set()
            assert await served_by(pool, 2) == ["10.1.0.1"] * 2


class TestAnswers:
    async def test_a_failed_lookup_keeps_the_nodes_a_missing_name_departs_them(self) -> None:
        resolver = ScriptedResolver({NAME: ["10.2.0.1"]})
        async with discovered_pool(FakeNodes(), resolver) as (pool, discovery):
            await discovery.refresh()
            errors_before, empty_before = lookups("error"), lookups("empty")

            resolver.unreachable = True
            await discovery.refresh()
            assert lookups("error") == errors_before + 1
            assert await served_by(pool, 1) == ["10.2.0.1"]
            assert await pool.any_ready()

            resolver.unreachable = False
            resolver.answers = {}  # NXDOMAIN: the Service is gone, or has no ready pod
            await discovery.refresh()
            assert lookups("empty") == empty_before + 1
            assert pool.snapshot() == []
            assert not await pool.any_ready()
            with pytest.raises(UpstreamUnavailable) as refused:
                await transcribe(pool)
        assert refused.value.code == "upstream_unavailable"

    async def test_several_names_and_urls_share_one_pool(self) -> None:
        other = "gpu-nodes.example.internal"
        resolver = ScriptedResolver({NAME: ["10.3.0.1", "10.3.0.2"], other: ["10.3.0.2"]})
        entries = f"http://10.3.0.1:8001,{ENTRY},dns+http://{other}:9000/asr"
        async with discovered_pool(FakeNodes(), resolver, entries) as (pool, discovery):
            await discovery.refresh()
            sources = {url: status.source for url, status in by_url(pool).items()}
            assert sources == {
                node("10.3.0.1"): NodeSource.config,  # the URL wins over the same address
                node("10.3.0.2"): NodeSource.dns,
                "http://10.3.0.2:9000/asr": NodeSource.dns,
            }
            resolver.answers = {}
            await discovery.refresh()
            # Only DNS-found nodes follow DNS; the configured URL stays.
            assert list(by_url(pool)) == [node("10.3.0.1")]

    async def test_ipv6_addresses_become_bracketed_urls(self) -> None:
        resolver = ScriptedResolver({NAME: ["fd00:10::7"]})
        async with discovered_pool(FakeNodes(), resolver) as (pool, discovery):
            await discovery.refresh()
            assert list(by_url(pool)) == ["http://[fd00:10::7]:8001"]

    async def test_an_admin_drain_and_leaving_dns_are_separate(self) -> None:
        nodes = FakeNodes()
        release = anyio.Event()
        nodes.transcribe["10.4.0.1"] = held(release)
        resolver = ScriptedResolver({NAME: ["10.4.0.1", "10.4.0.2"]})
        async with (
            discovered_pool(nodes, resolver) as (pool, discovery),
            anyio.create_task_group() as requests,
        ):
            await discovery.refresh()
            requests.start_soon(transcribe, pool)
            await eventually(lambda: nodes.calls == ["10.4.0.1"])
            resolver.answers[NAME] = ["10.4.0.2"]
            await discovery.refresh()
            # The shared membership (no rows: nothing registered, nothing drained) does not
            # bring back a node that left DNS ...
            apply_membership(pool, [])
            assert by_url(pool)[node("10.4.0.1")].departed is True
            assert await served_by(pool, 2) == ["10.4.0.2"] * 2

            # ... and DNS does not undo an admin's drain.
            resolver.answers[NAME] = ["10.4.0.1", "10.4.0.2"]
            await discovery.refresh()
            pool.drain(node("10.4.0.1"))
            await discovery.refresh()
            status = by_url(pool)[node("10.4.0.1")]
            assert (status.draining, status.departed) == (True, False)
            assert await served_by(pool, 2) == ["10.4.0.2"] * 2
            release.set()


class TestMetrics:
    async def test_series_of_departed_nodes_leave_with_them(self) -> None:
        resolver = ScriptedResolver()
        async with discovered_pool(FakeNodes(), resolver) as (pool, discovery):
            # Pods rescheduled again and again, each time under new addresses.
            for generation in range(30):
                resolver.answers[NAME] = [f"10.5.{generation}.1", f"10.5.{generation}.2"]
                await discovery.refresh()
                assert sorted(await served_by(pool, 2)) == [
                    f"10.5.{generation}.1",
                    f"10.5.{generation}.2",
                ]
            upstream = {
                sample.labels["node"]
                for family in REGISTRY.collect()
                if family.name.startswith("asrgw_upstream_")
                for sample in family.samples
                if sample.labels.get("node", "").startswith("http://10.5.")
            }
            pool_series = {
                sample.labels["node"]
                for family in metrics.PoolCollector(pool).collect()
                for sample in family.samples
                if "node" in sample.labels
            }
        assert upstream == pool_series == {node("10.5.29.1"), node("10.5.29.2")}


class TestSettings:
    def test_urls_and_dns_names_are_told_apart(self) -> None:
        settings = GatewaySettings(
            nodes=f" http://gpu1:8001/ , {ENTRY}, dns+http://10.0.0.9", node_dns_refresh_seconds=3
        )
        assert settings.node_urls == ["http://gpu1:8001"]
        assert settings.node_dns_entries == [ENTRY, "dns+http://10.0.0.9"]
        name = DnsNodeName.parse(ENTRY)
        assert (name.name, name.node_url("10.9.9.9")) == (NAME, "http://10.9.9.9:8001")

    @pytest.mark.parametrize(
        ("entry", "message"),
        [
            (f"dns+https://{NAME}:8443", "over plain HTTP"),
            ("dns+http://:8001", "names no host"),
            (NAME, "must be a URL (http:// or https://) or a DNS name"),
        ],
    )
    def test_entries_that_cannot_work_are_refused_at_start(self, entry: str, message: str) -> None:
        with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            GatewaySettings(nodes=entry)

    def test_the_refresh_interval_must_be_positive(self) -> None:
        with pytest.raises(ValidationError, match="node_dns_refresh_seconds"):
            GatewaySettings(nodes=ENTRY, node_dns_refresh_seconds=0)


class TestSystemResolver:
    async def test_localhost_resolves_to_a_loopback_address(self) -> None:
        addresses = await SystemResolver().addresses("localhost")
        assert addresses
        assert set(addresses) <= {"127.0.0.1", "::1"}


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[Database]:
    upgrade_to_head(sqlite_url)
    database = Database(sqlite_url)
    yield database
    database.dispose()


class TestGateway:
    def test_a_gateway_follows_localhost_to_a_real_node(
        self, node_url: str, ledger: Database, weather_wav: Path
    ) -> None:
        port = httpx.URL(node_url).port
        settings = admin_settings(nodes=f"dns+http://localhost:{port}", node_secret=NODE_SECRET)
        key = create_tenant_with_key(ledger, "acme", price_per_1k_tokens_micros=20_000)
        admin = bearer(token(settings))
        with admin_client(ledger, settings) as client:
            wait_until(lambda: client.get("/health/ready").status_code == 200, "a ready node")
            with weather_wav.open("rb") as audio:
                response = client.post(
                    "/v1/audio/transcriptions",
                    headers={"Authorization": f"Bearer {key}"},
                    files={"file": ("weather.wav", audio, "audio/wav")},
                    data={"model": "whisper-1"},
                )
            assert response.status_code == 200, response.text
            assert "weather" in response.json()["text"]
            listed = {
                item["url"]: item for item in client.get("/admin/nodes", headers=admin).json()
            }
            found = listed[f"http://127.0.0.1:{port}"]
            assert (found["source"], found["healthy"], found["departed"]) == ("dns", True, False)
            refused = client.delete(f"/admin/nodes/{found['id']}", headers=admin)
            assert refused.status_code == 409

    def test_scaling_the_nodes_needs_no_gateway_restart(
        self, node_url: str, ledger: Database
    ) -> None:
        port = httpx.URL(node_url).port
        resolver = ScriptedResolver({NAME: []})
        settings = admin_settings(
            nodes=f"dns+http://{NAME}:{port}",
            node_secret=NODE_SECRET,
            node_dns_refresh_seconds=0.1,
        )
        admin = bearer(token(settings))
        app = create_app(settings, BillingSettings(database_url=ledger.url), resolver=resolver)
        with TestClient(app) as client:

            def listed() -> list[str]:
                return [item["url"] for item in client.get("/admin/nodes", headers=admin).json()]

            wait_until(lambda: len(resolver.lookups) >= 2, "two lookups")
            assert client.get("/health/ready").status_code == 503

            resolver.answers[NAME] = ["127.0.0.1"]  # scaled from 0 to 1
            wait_until(lambda: client.get("/health/ready").status_code == 200, "the node ready")
            assert listed() == [f"http://127.0.0.1:{port}"]

            resolver.answers[NAME] = []  # and back to 0
            wait_until(lambda: listed() == [], "the node gone")
            ready = client.get("/health/ready")
            assert (ready.status_code, ready.json()["nodes"]) == (503, False)

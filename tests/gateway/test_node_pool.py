"""Routing decisions of the node pool, against nodes faked with ``httpx.MockTransport``."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from gateway.config import GatewaySettings
from gateway.errors import InvalidAudio, InvalidRequest, ModelNotFound, UpstreamUnavailable
from gateway.nodes import CircuitState, NodeNotFound, NodePool, NodeSource, NodeStatus
from gateway.nodes.client import HttpxNodeClient
from gateway.nodes.registry import RECHECK_SECONDS
from inference.protocol import NDJSON_MEDIA_TYPE, READY_PATH, TranscribeParams, TranscriptionResult

pytestmark = pytest.mark.anyio

MODEL = {
    "id": "m",
    "engine": "fake",
    "languages": ["en"],
    "timestamps": True,
    "word_timestamps": False,
    "hotwords": False,
    "loaded": True,
}
PARAMS = TranscribeParams(model="m")
Behavior = Callable[[httpx.Request], Awaitable[httpx.Response]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def succeed(request: httpx.Request) -> httpx.Response:
    result = {
        "text": f"served by {request.url.host}",
        "language": "en",
        "duration": 2.0,
        "segments": [],
        "model": "m",
        "processing_ms": 5,
    }
    return httpx.Response(200, json=result)


def answer(status: int, code: str, *, retry_after: int | None = None) -> Behavior:
    async def behave(_request: httpx.Request) -> httpx.Response:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = {"error": {"message": code, "type": "t", "code": code}}
        return httpx.Response(status, json=body, headers=headers)

    return behave


def fail_with(error: type[httpx.TransportError]) -> Behavior:
    async def behave(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)

    return behave


def time_out_after(clock: FakeClock, seconds: float) -> Behavior:
    """A check that times out ``seconds`` later on ``clock``."""

    async def behave(request: httpx.Request) -> httpx.Response:
        clock.advance(seconds)
        raise httpx.ReadTimeout("simulated", request=request)

    return behave


def held(release: anyio.Event) -> Behavior:
    async def behave(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return await succeed(request)

    return behave


class FakeNodes:
    """Nodes a, b, c, … answering what each test scripts; every transcribe call is recorded."""

    def __init__(self) -> None:
        self.transcribe: dict[str, Behavior] = {}
        self.ready_status: dict[str, int] = {}
        self.ready_behavior: dict[str, Behavior] = {}  # instead of ready_status, when set
        self.ready_checks: list[str] = []
        self.calls: list[str] = []
        self.read_timeouts: list[float] = []
        self.connect_timeouts: list[float] = []
        self.transport = httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        node = request.url.host
        if request.url.path == READY_PATH:
            self.ready_checks.append(node)
            if node in self.ready_behavior:
                return await self.ready_behavior[node](request)
            status = self.ready_status.get(node, 200)
            state = "ready" if status == 200 else "loading"
            return httpx.Response(status, json={"status": state, "models": [MODEL]})
        self.calls.append(node)
        self.read_timeouts.append(request.extensions["timeout"]["read"])
        self.connect_timeouts.append(request.extensions["timeout"]["connect"])
        return await self.transcribe.get(node, succeed)(request)


@asynccontextmanager
async def open_pool(
    nodes: FakeNodes,
    urls: str = "http://a,http://b",
    clock: FakeClock | None = None,
    **settings: Any,
) -> AsyncIterator[NodePool]:
    async with HttpxNodeClient(nodes.transport) as client:
        yield NodePool(GatewaySettings(nodes=urls, **settings), client, clock=clock or FakeClock())


async def transcribe(pool: NodePool, audio_ms: int | None = 2_000) -> TranscriptionResult:
    return await pool.transcribe(b"RIFF", "a.wav", "audio/wav", PARAMS, audio_ms=audio_ms)


async def eventually(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(30):
        while not condition():
            await anyio.sleep(0.001)


def by_url(pool: NodePool) -> dict[str, NodeStatus]:
    return {status.url: status for status in pool.snapshot()}


@asynccontextmanager
async def held_on_a(
    nodes: FakeNodes, pool: NodePool
) -> AsyncIterator[tuple[anyio.Event, list[str]]]:
    """One request in flight on node a for the block: set the event to let a answer it; its
    text is in the list once answered. The block ends once it is."""
    release = anyio.Event()
    nodes.transcribe["a"] = held(release)
    results: list[str] = []

    async def send() -> None:
        results.append((await transcribe(pool)).text)

    async with anyio.create_task_group() as requests:
        requests.start_soon(send)
        await eventually(lambda: nodes.calls == ["a"])
        yield release, results


class TestLeastOutstanding:
    async def test_ties_go_round_in_rotation(self) -> None:
        nodes = FakeNodes()
        async with open_pool(nodes, "http://a,http://b,http://c") as pool:
            served = [(await transcribe(pool)).text for _ in range(6)]
        assert served == [f"served by {node}" for node in "abcabc"]

    async def test_the_node_with_fewest_requests_in_flight_gets_the_next(self) -> None:
        nodes = FakeNodes()
        release_a, release_b = anyio.Event(), anyio.Event()
        nodes.transcribe = {"a": held(release_a), "b": held(release_b)}
        results: list[str] = []

        async def send() -> None:
            results.append((await transcribe(pool)).text)

        async with open_pool(nodes) as pool, anyio.create_task_group() as requests:
            for sent in range(1, 5):
                requests.start_soon(send)
                await eventually(lambda sent=sent: len(nodes.calls) == sent)  # type: ignore[misc]
            assert sorted(nodes.calls) == ["a", "a", "b", "b"]
            assert [status.outstanding for status in pool.snapshot()] == [2, 2]
            release_a.set()
            await eventually(lambda: by_url(pool)["http://a"].outstanding == 0)
            # Rotation alone would send one of these to b, which still has two in flight.
            await transcribe(pool)
            await transcribe(pool)
            assert nodes.calls[4:] == ["a", "a"]
            release_b.set()
        assert len(results) == 4
        assert [status.outstanding for status in pool.snapshot()] == [0, 0]


class TestCircuitBreaker:
    async def test_open_skipped_half_open_trial_closed(self) -> None:
        nodes, clock = FakeNodes(), FakeClock()
        nodes.transcribe["a"] = answer(503, "node_overloaded")
        async with open_pool(
            nodes, "http://a", clock, node_failure_threshold=2, node_circuit_open_seconds=30
        ) as pool:
            for _ in range(2):
                with pytest.raises(UpstreamUnavailable):
                    await transcribe(pool)
            (status,) = pool.snapshot()
            assert (status.circuit, status.consecutive_failures) == (CircuitState.open, 2)
            assert status.circuit_half_opens_at is not None

            with pytest.raises(UpstreamUnavailable) as skipped:
                await transcribe(pool)
            assert nodes.calls == ["a", "a"]
            assert skipped.value.headers() == {"Retry-After": "30"}

            clock.advance(30)
            assert pool.snapshot()[0].circuit is CircuitState.half_open
            release = anyio.Event()
            nodes.transcribe["a"] = held(release)
            async with anyio.create_task_group() as requests:
                requests.start_soon(transcribe, pool)
                await eventually(lambda: len(nodes.calls) == 3)
                # Only the trial goes through while half-open.
                with pytest.raises(UpstreamUnavailable):
                    await transcribe(pool)
                assert len(nodes.calls) == 3
                release.set()
            (status,) = pool.snapshot()
            assert (status.circuit, status.consecutive_failures) == (CircuitState.closed, 0)
            assert (await transcribe(pool)).text == "served by a"

    async def test_a_failed_trial_opens_the_circuit_again(self) -> None:
        nodes, clock = FakeNodes(), FakeClock()
        nodes.transcribe["a"] = answer(502, "bad_gateway")
        async with open_pool(
            nodes, "http://a", clock, node_failure_threshold=3, node_circuit_open_seconds=10
        ) as pool:
            for _ in range(3):
                with pytest.raises(UpstreamUnavailable):
                    await transcribe(pool)
            clock.advance(10)
            with pytest.raises(UpstreamUnavailable):
                await transcribe(pool)
            assert len(nodes.calls) == 4
            assert pool.snapshot()[0].circuit is CircuitState.open

    async def test_other_nodes_serve_while_a_circuit_is_open(self) -> None:
        nodes = FakeNodes()
        nodes.transcribe["b"] = fail_with(httpx.ReadTimeout)
        async with open_pool(nodes, node_failure_threshold=1) as pool:
            assert (await transcribe(pool)).text == "served by a"
            with pytest.raises(UpstreamUnavailable):
                await transcribe(pool)  # b times out: not retried, and its circuit opens
            served = [(await transcribe(pool)).text for _ in range(4)]
        assert nodes.calls == ["a", "b", "a", "a", "a", "a"]
        assert served == ["served by a"] * 4
        assert by_url(pool)["http://b"].circuit is CircuitState.open


class TestRetries:
    async def test_a_connect_error_moves_the_request_to_another_node(self) -> None:
        nodes = FakeNodes()
        nodes.transcribe["a"] = fail_with(httpx.ConnectError)
        async with open_pool(nodes) as pool:
            result = await transcribe(pool)
            status = by_url(pool)["http://a"]
        assert result.text == "served by b"
        assert nodes.calls == ["a", "b"]
        assert status.healthy is False
        assert status.last_error == "ConnectError: simulated"

    async def test_a_stream_moves_to_another_node_on_a_connect_error_as_a_request_does(
        self,
    ) -> None:
        async def streamed(request: httpx.Request) -> httpx.Response:
            result = (await succeed(request)).json()
            lines = [
                {"type": "delta", "text": result["text"]},
                {"type": "result", "result": result},
            ]
            body = "".join(json.dumps(line) + "\n" for line in lines)
            return httpx.Response(200, text=body, headers={"Content-Type": NDJSON_MEDIA_TYPE})

        nodes = FakeNodes()
        nodes.transcribe["a"] = fail_with(httpx.ConnectError)
        nodes.transcribe["b"] = streamed
        async with (
            open_pool(nodes) as pool,
            pool.transcribe_stream(b"RIFF", "a.wav", "audio/wav", PARAMS) as events,
        ):
            received = [event async for event in events]
            status = by_url(pool)["http://a"]
        assert [type(event).__name__ for event in received] == [
            "TranscriptDelta",
            "TranscriptionResult",
        ]
        assert nodes.calls == ["a", "b"]
        assert status.healthy is False  # as for a whole request: no more until it is ready
        assert status.last_error == "ConnectError: simulated"

    @pytest.mark.parametrize("status", [502, 503, 504])
    async def test_a_gateway_error_moves_the_request_to_another_node(self, status: int) -> None:
        nodes = FakeNodes()
        nodes.transcribe["a"] = answer(status, "node_overloaded", retry_after=1)
        async with open_pool(nodes) as pool:
            result = await transcribe(pool)
        assert result.text == "served by b"
        assert nodes.calls == ["a", "b"]

    async def test_at_most_max_attempts_nodes_are_tried(self) -> None:
        nodes = FakeNodes()
        nodes.transcribe = {node: answer(503, "node_overloaded") for node in "abcd"}
        urls = "http://a,http://b,http://c,http://d"
        async with open_pool(nodes, urls, node_max_attempts=3) as pool:
            with pytest.raises(UpstreamUnavailable):
                await transcribe(pool)
        assert len(nodes.calls) == len(set(nodes.calls)) == 3

    @pytest.mark.parametrize(
        "error", [httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.WriteError]
    )
    async def test_no_retry_once_the_node_has_the_request(
        self, error: type[httpx.TransportError]
    ) -> None:
        nodes = FakeNodes()
        nodes.transcribe["a"] = fail_with(error)
        async with open_pool(nodes) as pool:
            with pytest.raises(UpstreamUnavailable) as failed:
                await transcribe(pool)
            status = by_url(pool)["http://a"]
        assert nodes.calls == ["a"]
        assert failed.value.code == "upstream_unavailable"
        assert status.consecutive_failures == 1

    async def test_a_refusal_of_the_audio_is_not_retried(self) -> None:
        nodes = FakeNodes()
        nodes.transcribe["a"] = answer(400, "invalid_audio")
        async with open_pool(nodes) as pool:
            with pytest.raises(InvalidAudio):
                await transcribe(pool)
            status = by_url(pool)["http://a"]
        assert nodes.calls == ["a"]
        assert status.consecutive_failures == 0

    async def test_every_call_tells_the_node_the_most_it_may_decode(self) -> None:
        """The measured length plus 500 ms and 1 %, on whole, streamed and language calls; a
        node's refusal of a file that holds more is the customer's invalid_audio."""
        nodes = FakeNodes()
        bodies: list[bytes] = []
        refuse = answer(400, "invalid_audio")

        async def record(request: httpx.Request) -> httpx.Response:
            bodies.append(request.content)
            return await refuse(request)

        nodes.transcribe = {"a": record, "b": record}
        async with open_pool(nodes) as pool:
            with pytest.raises(InvalidAudio):
                await transcribe(pool, audio_ms=25_000)
            with pytest.raises(InvalidAudio):
                async with pool.transcribe_stream(
                    b"RIFF", "a.wav", "audio/wav", PARAMS, audio_ms=25_000
                ):
                    pass
            with pytest.raises(InvalidAudio):
                await pool.detect_language(b"RIFF", "a.wav", "audio/wav", "m", audio_ms=30_000)
            with pytest.raises(InvalidAudio):
                await transcribe(pool, audio_ms=None)
        allowances = [
            body.split(b'name="max_audio_ms"\r\n\r\n')[1].split(b"\r\n")[0] for body in bodies[:3]
        ]
        assert allowances == [b"25750", b"25750", b"30800"]
        assert b"max_audio_ms" not in bodies[3]

    async def test_a_node_without_the_model_passes_it_on(self) -> None:
        nodes = FakeNodes()
        nodes.transcribe["a"] = answer(404, "model_not_found")
        async with open_pool(nodes) as pool:
            assert (await transcribe(pool)).text == "served by b"
            nodes.transcribe["b"] = answer(404, "model_not_found")
            with pytest.raises(ModelNotFound):
                await transcribe(pool)


class TestDrain:
    async def test_a_draining_node_finishes_in_flight_work_and_gets_nothing_new(self) -> None:
        nodes = FakeNodes()
        async with open_pool(nodes) as pool, held_on_a(nodes, pool) as (release, results):
            drained = pool.drain("http://a/")
            assert (drained.draining, drained.outstanding) == (True, 1)
            served = [(await transcribe(pool)).text for _ in range(3)]
            assert served == ["served by b"] * 3
            release.set()
            await eventually(lambda: results == ["served by a"])
            assert by_url(pool)["http://a"].outstanding == 0
            pool.undrain(drained.id)
            assert [(await transcribe(pool)).text for _ in range(2)] == [
                "served by a",
                "served by b",
            ]

    async def test_nodes_are_added_and_removed_at_runtime(self) -> None:
        nodes = FakeNodes()
        async with open_pool(nodes, "http://a", node_allowed_hosts="b") as pool:
            added = pool.add("http://b/")
            assert pool.add("http://b") == added
            assert (added.url, added.source, added.healthy) == (
                "http://b",
                NodeSource.runtime,
                None,
            )
            assert [(await transcribe(pool)).text for _ in range(2)] == [
                "served by a",
                "served by b",
            ]
            removed = pool.remove(added.id)
            assert removed.url == "http://b"
            assert [status.url for status in pool.snapshot()] == ["http://a"]
            with pytest.raises(NodeNotFound):
                pool.drain("http://b")
            with pytest.raises(InvalidRequest):
                pool.add("gpu1:8001")

    async def test_ids_are_the_same_in_every_gateway(self) -> None:
        async with (
            open_pool(FakeNodes(), "http://a,http://b") as one,
            open_pool(FakeNodes(), "http://b") as other,
        ):
            assert by_url(one)["http://b"].id == by_url(other)["http://b"].id
            assert by_url(one)["http://a"].id != by_url(one)["http://b"].id


class TestOutage:
    async def test_retry_after_counts_down_to_the_earliest_half_open(self) -> None:
        nodes, clock = FakeNodes(), FakeClock()
        nodes.transcribe = {"a": answer(503, "x"), "b": answer(504, "x")}
        async with open_pool(
            nodes, clock=clock, node_failure_threshold=1, node_circuit_open_seconds=30
        ) as pool:
            with pytest.raises(UpstreamUnavailable) as first:
                await transcribe(pool)
            clock.advance(12)
            with pytest.raises(UpstreamUnavailable) as later:
                await transcribe(pool)
            clock.advance(17.5)
            with pytest.raises(UpstreamUnavailable) as last:
                await transcribe(pool)
        assert nodes.calls == ["a", "b"]
        assert first.value.headers() == {"Retry-After": "30"}
        assert later.value.headers() == {"Retry-After": "18"}
        assert last.value.headers() == {"Retry-After": "1"}

    async def test_a_node_retry_after_is_used_when_sooner(self) -> None:
        nodes = FakeNodes()
        nodes.transcribe = {"a": answer(503, "node_overloaded", retry_after=2)}
        async with open_pool(nodes, "http://a", node_health_interval_seconds=7) as pool:
            with pytest.raises(UpstreamUnavailable) as failed:
                await transcribe(pool)
        assert failed.value.headers() == {"Retry-After": "2"}

    async def test_nodes_not_ready_retry_after_the_next_health_check(self) -> None:
        nodes = FakeNodes()
        nodes.ready_status = {"a": 503, "b": 503}
        async with open_pool(nodes, node_health_interval_seconds=7) as pool:
            await pool.check_health()
            with pytest.raises(UpstreamUnavailable) as failed:
                await transcribe(pool)
        assert nodes.calls == []
        assert failed.value.headers() == {"Retry-After": "7"}


class TestHealthChecks:
    async def test_a_node_not_ready_is_skipped_until_ready_again(self) -> None:
        nodes = FakeNodes()
        nodes.ready_status["a"] = 503
        async with open_pool(nodes) as pool:
            await pool.check_health()
            status = by_url(pool)["http://a"]
            assert (status.healthy, status.last_error) == (False, "loading")
            assert status.last_check_at is not None
            assert [(await transcribe(pool)).text for _ in range(3)] == ["served by b"] * 3
            nodes.ready_status["a"] = 200
            await pool.check_health()
            assert {(await transcribe(pool)).text for _ in range(2)} == {
                "served by a",
                "served by b",
            }

    async def test_the_background_loop_follows_the_nodes(self) -> None:
        nodes = FakeNodes()
        async with (
            open_pool(nodes, node_health_interval_seconds=0.01) as pool,
            anyio.create_task_group() as background,
        ):
            background.start_soon(pool.run_health_checks)
            await eventually(lambda: all(status.healthy for status in pool.snapshot()))
            nodes.ready_status["b"] = 503
            await eventually(lambda: by_url(pool)["http://b"].healthy is False)
            nodes.ready_status["b"] = 200
            await eventually(lambda: by_url(pool)["http://b"].healthy is True)
            background.cancel_scope.cancel()

    async def test_a_node_silent_to_its_check_is_checked_again_by_the_next_request(self) -> None:
        nodes, clock = FakeNodes(), FakeClock()
        nodes.ready_behavior["a"] = fail_with(httpx.ReadTimeout)
        async with open_pool(nodes, "http://a", clock=clock) as pool:
            await pool.check_health()
            assert by_url(pool)["http://a"].healthy is False
            clock.advance(RECHECK_SECONDS)
            # Still silent: the request's own check fails too, and it is answered 503.
            with pytest.raises(UpstreamUnavailable):
                await transcribe(pool)
            assert nodes.ready_checks == ["a", "a"]
            # Within RECHECK_SECONDS of that check, the next request does not check again.
            del nodes.ready_behavior["a"]
            with pytest.raises(UpstreamUnavailable):
                await transcribe(pool)
            assert nodes.ready_checks == ["a", "a"]
            clock.advance(RECHECK_SECONDS)
            assert (await transcribe(pool)).text == "served by a"
            assert nodes.ready_checks == ["a", "a", "a"]
            assert by_url(pool)["http://a"].healthy is True
        assert nodes.calls == ["a"]

    async def test_a_check_that_just_failed_is_not_repeated_at_once(self) -> None:
        """Spaced from when the last check ended: one that took its whole timeout to fail is
        not sent again by the request that finds the node out right after."""
        nodes, clock = FakeNodes(), FakeClock()
        nodes.ready_behavior["a"] = time_out_after(clock, 2 * RECHECK_SECONDS)
        async with open_pool(nodes, "http://a", clock=clock) as pool:
            await pool.check_health()
            with pytest.raises(UpstreamUnavailable) as refused:
                await transcribe(pool)
            assert nodes.ready_checks == ["a"]
            # Retry when a request would check it again, not at the next interval's check.
            assert refused.value.headers() == {"Retry-After": str(math.ceil(RECHECK_SECONDS))}
            clock.advance(RECHECK_SECONDS)
            del nodes.ready_behavior["a"]
            assert (await transcribe(pool)).text == "served by a"
            assert nodes.ready_checks == ["a", "a"]

    async def test_readiness_checks_a_silent_node_again_rather_than_wait_for_the_interval(
        self,
    ) -> None:
        nodes, clock = FakeNodes(), FakeClock()
        nodes.ready_behavior["a"] = fail_with(httpx.ConnectTimeout)
        async with open_pool(nodes, "http://a", clock=clock) as pool:
            assert not await pool.any_ready()  # the first check; not repeated at once
            assert nodes.ready_checks == ["a"]
            del nodes.ready_behavior["a"]
            assert not await pool.any_ready()  # within RECHECK_SECONDS: not checked again
            assert nodes.ready_checks == ["a"]
            clock.advance(RECHECK_SECONDS)
            assert await pool.any_ready()
            assert nodes.ready_checks == ["a", "a"]
            assert await pool.any_ready()  # ready: nothing to check
            assert nodes.ready_checks == ["a", "a"]

    async def test_requests_arriving_during_a_recheck_wait_for_that_one_check(self) -> None:
        nodes = FakeNodes()
        nodes.ready_behavior["a"] = fail_with(httpx.ConnectError)
        release = anyio.Event()
        results: list[str] = []

        async def answer_when_released(request: httpx.Request) -> httpx.Response:
            await release.wait()
            return httpx.Response(200, json={"status": "ready", "models": [MODEL]})

        async def send() -> None:
            results.append((await transcribe(pool)).text)

        clock = FakeClock()
        async with open_pool(nodes, "http://a", clock=clock) as pool:
            await pool.check_health()
            clock.advance(RECHECK_SECONDS)
            nodes.ready_behavior["a"] = answer_when_released
            async with anyio.create_task_group() as requests:
                for _ in range(3):
                    requests.start_soon(send)
                await eventually(lambda: nodes.ready_checks == ["a", "a"])
                release.set()
        assert results == ["served by a"] * 3
        assert nodes.ready_checks == ["a", "a"]

    async def test_a_node_out_for_not_answering_is_back_when_a_request_is_answered(self) -> None:
        nodes = FakeNodes()
        async with open_pool(nodes, "http://a,http://b") as pool:
            async with held_on_a(nodes, pool) as (release, results):
                nodes.ready_behavior["a"] = fail_with(httpx.ReadTimeout)
                await pool.check_health()
                assert by_url(pool)["http://a"].healthy is False
                release.set()
            status = by_url(pool)["http://a"]
            assert (status.healthy, status.last_error) == (True, None)
            assert (await transcribe(pool)).text == "served by b"
            assert (await transcribe(pool)).text == "served by a"
            assert results == ["served by a"]

    async def test_a_node_that_says_it_is_not_ready_stays_out_until_its_check_says_ready(
        self,
    ) -> None:
        nodes = FakeNodes()
        async with open_pool(nodes, "http://a") as pool:
            async with held_on_a(nodes, pool) as (release, _):
                nodes.ready_status["a"] = 503
                await pool.check_health()
                release.set()
            # Its answer to the request sent before does not undo what it said; nor does a
            # request check it again before the interval's check.
            assert by_url(pool)["http://a"].healthy is False
            checks = len(nodes.ready_checks)
            with pytest.raises(UpstreamUnavailable):
                await transcribe(pool)
            assert len(nodes.ready_checks) == checks
        assert nodes.calls == ["a"]

    async def test_ready_and_models_come_from_the_health_checks(self) -> None:
        nodes = FakeNodes()
        async with open_pool(nodes) as pool:
            assert await pool.any_ready()
            assert [model.id for model in await pool.list_models()] == ["m"]
            assert all(status.models == ["m"] for status in pool.snapshot())
            with pytest.raises(ModelNotFound):
                await pool.transcribe(b"RIFF", "a.wav", "audio/wav", TranscribeParams(model="x"))
            nodes.ready_status = {"a": 503, "b": 503}
            await pool.check_health()
            assert not await pool.any_ready()
            assert await pool.list_models() == []
        assert nodes.calls == []


class TestTimeouts:
    async def test_the_read_timeout_scales_with_the_audio(self) -> None:
        nodes = FakeNodes()
        async with open_pool(
            nodes,
            "http://a",
            node_timeout_base_seconds=10,
            node_timeout_per_audio_second=2,
            node_timeout_seconds=600,
            node_connect_timeout_seconds=3,
        ) as pool:
            await transcribe(pool, audio_ms=1_500)
            await transcribe(pool, audio_ms=60_000)
            await transcribe(pool, audio_ms=3_600_000)
            await transcribe(pool, audio_ms=None)
        assert nodes.read_timeouts == [13.0, 130.0, 600.0, 600.0]
        assert nodes.connect_timeouts == [3.0] * 4

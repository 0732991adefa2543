"""The node's /metrics: the bearer token, the model's load state, and every per-model series
present at zero before the first request (so dashboards and alerts see 0, not nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from inference.app import create_app
from inference.config import InferenceSettings
from inference.memory import _cuda
from tests.inference.test_node_app import wait_ready

TOKEN = "node-metrics-token"
MODEL = "pocketsphinx-en"
MAX_QUEUE = 7

Scraped = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Scraped:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: TestClient) -> Scraped:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return samples(response.text)


def value(scraped: Scraped, name: str, **labels: str) -> float | None:
    return scraped.get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def node() -> Iterator[TestClient]:
    settings = InferenceSettings(models=MODEL, metrics_token=TOKEN, max_queue=MAX_QUEUE)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


class TestMetricsToken:
    def test_refused_without_the_token(self, node: TestClient) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = node.get("/metrics", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
            assert "asrnode_" not in response.text

    def test_served_with_the_token(self, node: TestClient) -> None:
        response = node.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        assert "asrnode_queue_depth" in response.text

    def test_open_when_no_token_is_set(self, tmp_path: Path) -> None:
        # Another model name: a second host of MODEL in this process would reset its series.
        settings = InferenceSettings(models=f"unloadable={tmp_path / 'missing'}")
        with TestClient(create_app(settings)) as client:
            assert client.get("/metrics").status_code == 200


class TestModelSeries:
    def test_a_ready_model_reports_its_state_and_capacity(self, node: TestClient) -> None:
        scraped = scrape(node)
        states = {
            state: value(scraped, "asrnode_model_state", model=MODEL, state=state)
            for state in ("loading", "warming", "ready", "failed")
        }
        assert states == {"loading": 0, "warming": 0, "ready": 1, "failed": 0}
        assert value(scraped, "asrnode_model_ready", model=MODEL) == 1
        assert value(scraped, "asrnode_queue_capacity", model=MODEL) == MAX_QUEUE

    def test_every_series_of_a_model_exists_before_its_first_request(
        self, node: TestClient
    ) -> None:
        scraped = scrape(node)
        for name, labels in [
            ("asrnode_queue_depth", {}),
            ("asrnode_requests_in_flight", {}),
            ("asrnode_items_in_progress", {}),
            ("asrnode_live_streams", {}),
            ("asrnode_engine_calls_total", {}),
            ("asrnode_items_total", {"outcome": "ok"}),
            ("asrnode_items_total", {"outcome": "error"}),
            ("asrnode_dropped_items_total", {"reason": "client_gone"}),
            ("asrnode_overloaded_total", {}),
            ("asrnode_audio_seconds_total", {}),
            ("asrnode_batch_size_count", {}),
            ("asrnode_inference_seconds_count", {}),
            ("asrnode_real_time_factor_count", {}),
        ]:
            assert value(scraped, name, model=MODEL, **labels) is not None, name
        assert value(scraped, "asrnode_decode_failures_total") is not None

    def test_a_model_that_failed_to_load_says_so(self, tmp_path: Path) -> None:
        settings = InferenceSettings(models=f"broken={tmp_path / 'missing'}")
        with TestClient(create_app(settings)) as client:
            client.app.state.pool.wait_loaded(30)  # type: ignore[attr-defined]
            scraped = samples(client.get("/metrics").text)
        assert value(scraped, "asrnode_model_state", model="broken", state="failed") == 1
        assert value(scraped, "asrnode_model_state", model="broken", state="loading") == 0
        assert value(scraped, "asrnode_model_ready", model="broken") == 0

    def test_gpu_series_exist_only_with_cuda(self, node: TestClient) -> None:
        # The GPU memory panels show no data on CPU nodes (docs/observability.md).
        names = {name for name, _labels in scrape(node)}
        gpu = {name for name in names if name.startswith("asrnode_gpu_memory")}
        if _cuda() is None:
            assert gpu == set()
        else:
            assert gpu == {
                "asrnode_gpu_memory_allocated_bytes",
                "asrnode_gpu_memory_reserved_bytes",
            }

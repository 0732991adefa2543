"""Dashboards and alerts use only metrics that ``gateway/metrics.py`` and
``inference/metrics.py`` define, and every metric defined there is on a dashboard, in an alert,
or listed in docs/observability.md as intentionally not shown. docs/observability.md lists
every panel with its queries."""

from __future__ import annotations

import json
import re

from prometheus_client.metrics import MetricWrapperBase

from gateway import metrics as gateway_metrics
from inference import metrics as node_metrics
from tests.fixtures.processes import ROOT
from tests.observability.panels import (
    METRIC_NAME,
    alert_expressions,
    dashboard_files,
    panels,
    queries,
)

DOCS = ROOT / "docs" / "observability.md"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def defined_families() -> dict[str, str]:
    """Family name → type, for every metric the two metrics modules define."""
    families: dict[str, str] = {}
    for module in (gateway_metrics, node_metrics):
        for item in vars(module).values():
            if isinstance(item, MetricWrapperBase):
                for family in item.describe():
                    families[family.name] = family.type
    for collector in (gateway_metrics.PoolCollector, gateway_metrics.LedgerCollector):
        for name, _help, _labels in collector.FAMILIES:
            families[name] = "gauge"
    return families


def sample_names(family: str, kind: str) -> set[str]:
    return {family + suffix for suffix in SUFFIXES[kind]}


def used_names() -> dict[str, set[str]]:
    """Metric name → where it is used."""
    used: dict[str, set[str]] = {}
    for query in queries():
        for name in METRIC_NAME.findall(query.text):
            used.setdefault(name, set()).add(query.id)
    for alert, expression in alert_expressions().items():
        for name in METRIC_NAME.findall(expression):
            used.setdefault(name, set()).add(f"alert {alert}")
    return used


def documented_as_not_shown() -> set[str]:
    text = DOCS.read_text()
    section = text.split("## Metrics not on a dashboard", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`((?:asrgw|asrnode)_[a-z0-9_]+)`", section))


def test_dashboards_and_alerts_use_only_defined_metrics() -> None:
    defined = {
        name for family, kind in defined_families().items() for name in sample_names(family, kind)
    }
    undefined = {name: where for name, where in used_names().items() if name not in defined}
    assert undefined == {}


def test_every_defined_metric_is_shown_or_documented_as_not() -> None:
    used = set(used_names())
    not_shown = documented_as_not_shown()
    unaccounted = []
    for family, kind in defined_families().items():
        names = sample_names(family, kind)
        if not names & used and not names & not_shown:
            unaccounted.append(family)
    assert unaccounted == []
    # A metric the docs call not shown is not shown, and exists.
    every_name = {
        name for family, kind in defined_families().items() for name in sample_names(family, kind)
    }
    assert not_shown <= every_name
    assert not_shown & used == set()


def test_labels_are_bounded() -> None:
    forbidden = {"tenant", "tenant_id", "api_key", "key", "key_id", "request_id", "user"}
    for module in (gateway_metrics, node_metrics):
        for item in vars(module).values():
            if isinstance(item, MetricWrapperBase):
                assert not forbidden & set(item._labelnames), item
    for collector in (gateway_metrics.PoolCollector, gateway_metrics.LedgerCollector):
        for name, _help, labels in collector.FAMILIES:
            assert not forbidden & set(labels), name


def test_the_docs_list_every_panel_with_its_queries() -> None:
    text = DOCS.read_text()
    for path in dashboard_files():
        dashboard = json.loads(path.read_text())
        assert f"## {dashboard['title']}" in text, dashboard["title"]
        for panel in panels(path):
            assert f"### {panel['title']}" in text, panel["title"]
            assert str(panel["description"]) in text, panel["title"]
    for query in queries():
        assert query.text in text, query.id
    for alert in alert_expressions():
        assert f"`{alert}`" in text, alert

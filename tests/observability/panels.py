"""The dashboards of grafana/dashboards as data: every panel and every query in it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.fixtures.processes import ROOT

DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = ROOT / "prometheus" / "rules.yml"
PROMETHEUS = "asrgw-prometheus"
LEDGER = "asrgw-ledger"
METRIC_NAME = re.compile(r"\b(?:asrgw|asrnode)_[a-z0-9_]+\b")


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    datasource: str  # the datasource uid
    text: str  # PromQL or SQL

    @property
    def id(self) -> str:
        return f"{self.dashboard} / {self.panel}"


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def panels(path: Path) -> Iterator[dict[str, object]]:
    for panel in json.loads(path.read_text())["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries() -> list[Query]:
    found = []
    for path in dashboard_files():
        title = json.loads(path.read_text())["title"]
        for panel in panels(path):
            for target in panel["targets"]:  # type: ignore[attr-defined]
                uid = target["datasource"]["uid"]
                text = target["expr"] if uid == PROMETHEUS else target["rawSql"]
                found.append(Query(title, str(panel["title"]), uid, text))
    return found


def promql() -> list[Query]:
    return [query for query in queries() if query.datasource == PROMETHEUS]


def sql() -> list[Query]:
    return [query for query in queries() if query.datasource == LEDGER]


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    return {
        rule["alert"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def rate_interval(expression: str, window: str) -> str:
    """Grafana's ``$__rate_interval`` as a fixed window, the one variable the panels use."""
    return expression.replace("$__rate_interval", window)

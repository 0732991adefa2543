"""The Prometheus configuration and alert rules as shipped, checked by promtool; the rules'
unit tests (prometheus/rules_test.yml) run through ``promtool test rules``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.fixtures.environment import require_tool
from tests.fixtures.processes import ROOT
from tests.observability.conftest import prometheus_config
from tests.observability.panels import alert_expressions

PROMETHEUS_DIR = ROOT / "prometheus"


def promtool(*arguments: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    require_tool("promtool")
    return subprocess.run(
        ["promtool", *arguments], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_check_config(tmp_path: Path) -> None:
    # The token files the shipped config points to (beside it) are the operator's to provide.
    for name in ("prometheus.yml", "rules.yml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    for token_file in ("asrgw-metrics-token", "asrnode-metrics-token"):
        (tmp_path / token_file).write_text("a-token\n")

    checked = promtool("check", "config", "prometheus.yml", cwd=tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout


def test_check_config_of_the_test_server(tmp_path: Path) -> None:
    config = prometheus_config("http://127.0.0.1:8000", "http://127.0.0.1:8001")
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))

    checked = promtool("check", "config", "prometheus.yml", cwd=tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_check_rules() -> None:
    checked = promtool("check", "rules", "rules.yml")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout


def test_rules_unit_tests() -> None:
    tested = promtool("test", "rules", "rules_test.yml")

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    firing = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert tested == firing == set(alert_expressions())

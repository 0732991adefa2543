"""The Helm chart (deploy/helm/asrgw), rendered by a real helm binary (`make chart-tools` puts a
static helm v4 in .cache/helm) and checked by kubernetes-validate and the operators' schemas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.environment import skip_or_fail
from tests.fixtures.processes import ROOT

CHART = ROOT / "deploy" / "helm" / "asrgw"
EXAMPLES = CHART / "examples"
RELEASE = "rel"
NAMESPACE = "speech"
# Kinds of the Prometheus operator and the Gateway API: kubernetes-validate has no schema for
# them; validate_custom_resources.mjs checks them against their CRDs' schemas instead.
CUSTOM_GROUPS = ("monitoring.coreos.com/", "gateway.networking.k8s.io/")

Manifest = dict[str, Any]


def find_helm() -> str | None:
    for candidate in (os.environ.get("HELM"), str(ROOT / ".cache" / "helm" / "helm")):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("helm")


@dataclass
class Helm:
    binary: str
    home: Path

    def environment(self, **extra: str) -> dict[str, str]:
        # helm keeps caches and repositories under these; a test leaves nothing in $HOME.
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            **extra,
        }

    def run(self, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *arguments],
            env=self.environment(**environment),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def template_text(self, *values_files: Path, options: tuple[str, ...] = ()) -> str:
        arguments = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *options]
        for values in values_files:
            arguments += ["--values", str(values)]
        result = self.run(*arguments)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def template(self, *values_files: Path, options: tuple[str, ...] = ()) -> list[Manifest]:
        text = self.template_text(*values_files, options=options)
        return [document for document in yaml.safe_load_all(text) if document]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = find_helm()
    if binary is None:
        skip_or_fail("helm is not installed (`make chart-tools` fetches it into .cache/helm)")
    assert binary is not None
    version = subprocess.run(
        [binary, "version", "--short"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith(("v3.", "v4.")), version.stdout
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    # The console script of this interpreter's environment (the dev extra installs it).
    script = Path(sys.executable).parent / "kubernetes-validate"
    if not script.is_file():
        skip_or_fail("kubernetes-validate is not installed (the `dev` extra has it)")
    return str(script)


@pytest.fixture(scope="session")
def custom_resource_models() -> Path:
    models = ROOT / ".cache" / "k8s-models"
    if shutil.which("node") is None or not (models / "node_modules").is_dir():
        skip_or_fail("node and the CRD models are not installed (`make chart-tools`)")
    return models


def validate_custom_resources(models: Path, manifests: list[Manifest]) -> list[dict[str, Any]]:
    """Each custom resource checked against its CRD's schema: [{kind, name, error}]."""
    result = subprocess.run(
        ["node", str(Path(__file__).parent / "validate_custom_resources.mjs"), str(models)],
        input=json.dumps(manifests),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stderr == "", result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {item["metadata"]["name"]: item for item in manifests if item["kind"] == kind}


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = by_kind(manifests, kind)
    assert name in found, f"no {kind} {name}: {sorted(found)}"
    return found[name]


def container(workload: Manifest) -> Manifest:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def env_of(workload_container: Manifest) -> dict[str, Any]:
    """name → value, or name → {"secretKeyRef": …} for values from Secrets."""
    return {
        item["name"]: item["value"] if "value" in item else item["valueFrom"]
        for item in workload_container["env"]
    }

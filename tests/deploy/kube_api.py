"""A Kubernetes API server reduced to what `helm template --dry-run=server` asks of one: API
discovery, and GETs of objects, of which only the Secrets the test stores exist.

No cluster can run here; this is what lets helm's own `lookup` read a release's Secret back, the
way `helm upgrade` does, so the chart's generated secrets can be checked to survive an upgrade.
Writes are not served: a server-side dry run only reads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# group/version → (plural, Kind) of every kind the chart renders with its default values.
RESOURCES = {
    "v1": [
        ("secrets", "Secret"),
        ("services", "Service"),
        ("serviceaccounts", "ServiceAccount"),
        ("configmaps", "ConfigMap"),
        ("pods", "Pod"),
        ("persistentvolumeclaims", "PersistentVolumeClaim"),
    ],
    "apps/v1": [("deployments", "Deployment"), ("statefulsets", "StatefulSet")],
    "batch/v1": [("jobs", "Job")],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget")],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy"), ("ingresses", "Ingress")],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
}


class KubeApi:
    def __init__(self, release: str) -> None:
        self.release = release
        # (namespace, name) → the Secret's data (base64 values, as the API returns them)
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.requests: list[str] = []

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if path == "/version":
            return 200, {"major": "1", "minor": "35", "gitVersion": "v1.35.0"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()}
        if path == "/api/v1" or (parts[0] == "apis" and len(parts) == 3):
            group_version = "v1" if path == "/api/v1" else "/".join(parts[1:])
            if group_version in RESOURCES:
                return 200, self._resource_list(group_version)
        if parts[:2] == ["api", "v1"] and len(parts) == 6 and parts[4] == "secrets":
            namespace, name = parts[3], parts[5]
            if (namespace, name) in self.secrets:
                return 200, self._secret(namespace, name)
        if parts[-1] == "secrets":
            # Helm's release records, which it lists by label: this cluster holds none.
            return 200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []}
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}

    def _groups(self) -> list[dict[str, Any]]:
        groups = []
        for group_version in RESOURCES:
            if "/" in group_version:
                group, version = group_version.split("/")
                entry = {"groupVersion": group_version, "version": version}
                groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
        return groups

    def _resource_list(self, group_version: str) -> dict[str, Any]:
        verbs = ["get", "list", "create", "update", "patch", "delete"]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": [
                {"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind}
                | {"verbs": verbs}
                for plural, kind in RESOURCES[group_version]
            ],
        }

    def _secret(self, namespace: str, name: str) -> dict[str, Any]:
        # The ownership helm checks before it would adopt an object into the release.
        metadata = {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": self.release,
                "meta.helm.sh/release-namespace": namespace,
            },
        }
        data = self.secrets[(namespace, name)]
        return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": data}


@contextmanager
def kube_api(release: str, directory: Path) -> Iterator[tuple[KubeApi, Path]]:
    """The API on a loopback port, and a kubeconfig file pointing at it."""
    api = KubeApi(release)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            api.requests.append(path)
            status, body = api.answer(path)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_arguments: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = directory / "kubeconfig"
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": url}}],
                "users": [{"name": "test", "user": {}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "current-context": "test",
            }
        )
    )
    try:
        yield api, kubeconfig
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

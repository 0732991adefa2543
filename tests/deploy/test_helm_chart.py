"""The Helm chart: lint, render with the default values and the two example values files, validate
against the newest Kubernetes schemas kubernetes-validate bundles (--strict: unknown fields are
errors) and the operators' schemas, refuse bad values, and carry what docs/deploy.md promises."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import latest_version

from tests.deploy.conftest import (
    CHART,
    CUSTOM_GROUPS,
    EXAMPLES,
    NAMESPACE,
    RELEASE,
    Helm,
    Manifest,
    by_kind,
    container,
    env_of,
    one,
    validate_custom_resources,
)
from tests.deploy.kube_api import kube_api
from tests.fixtures.processes import ROOT

SSO = EXAMPLES / "sso-autoscaling.yaml"
GPU = EXAMPLES / "gpu-nodes.yaml"
VALUES_FILES = {"default": None, "sso-autoscaling": SSO, "gpu-nodes": GPU}
FULLNAME = f"{RELEASE}-asrgw"
GATEWAY = f"{FULLNAME}-gateway"
NODE = f"{FULLNAME}-node"
HEADLESS = f"{FULLNAME}-node-headless"
MIGRATIONS = f"{FULLNAME}-migrations"


def render(helm: Helm, name: str) -> list[Manifest]:
    values = VALUES_FILES[name]
    return helm.template(*([values] if values else []))


def write_values(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def secret_ref(value: Any) -> tuple[str, str]:
    reference = value["secretKeyRef"]
    return reference["name"], reference["key"]


def hook(manifest: Manifest) -> tuple[str, str, str]:
    annotations = manifest["metadata"]["annotations"]
    return (
        annotations["helm.sh/hook"],
        annotations["helm.sh/hook-weight"],
        annotations["helm.sh/hook-delete-policy"],
    )


class TestLintAndValidate:
    @pytest.mark.parametrize("name", list(VALUES_FILES))
    def test_lint_passes(self, helm: Helm, name: str) -> None:
        values = VALUES_FILES[name]
        result = helm.run("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout

    @pytest.mark.parametrize("name", list(VALUES_FILES))
    def test_manifests_are_valid_for_the_newest_kubernetes(
        self, helm: Helm, kubernetes_validate: str, custom_resource_models: Path, name: str
    ) -> None:
        values = VALUES_FILES[name]
        rendered = helm.template_text(*([values] if values else []))
        version = latest_version()
        validated = subprocess.run(
            [kubernetes_validate, "--strict", "--kubernetes-version", version, "-"],
            input=rendered,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert validated.returncode == 0, validated.stdout + validated.stderr
        manifests = [document for document in yaml.safe_load_all(rendered) if document]
        custom = [item for item in manifests if item["apiVersion"].startswith(CUSTOM_GROUPS)]
        builtin = [item for item in manifests if item not in custom]
        passed = [line for line in validated.stdout.splitlines() if line.startswith("INFO")]
        assert len(passed) == len(builtin), validated.stdout
        assert all(f"against version {version.rsplit('.', 1)[0]}" in line for line in passed)
        # The rest are the custom resources, which it cannot know; their CRDs' schemas can.
        skipped = [line for line in validated.stdout.splitlines() if line.startswith("WARN")]
        assert len(skipped) == len(custom)
        checked = validate_custom_resources(custom_resource_models, custom)
        assert [result["error"] for result in checked] == [None] * len(custom)

    def test_the_custom_resource_check_refuses_a_broken_one(
        self, custom_resource_models: Path
    ) -> None:
        broken = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "broken"},
            "spec": {"selector": {}, "endpoints": [{"port": "http", "interval": "often"}]},
        }
        (result,) = validate_custom_resources(custom_resource_models, [broken])
        assert "interval" in result["error"]

    def test_the_example_values_render_what_they_promise(self, helm: Helm) -> None:
        assert set(by_kind(render(helm, "default"), "HorizontalPodAutoscaler")) == set()
        sso = render(helm, "sso-autoscaling")
        kinds = {item["kind"] for item in sso}
        assert {"HorizontalPodAutoscaler", "Ingress", "ServiceMonitor", "PrometheusRule"} <= kinds
        gpu = render(helm, "gpu-nodes")
        limits = container(one(gpu, "StatefulSet", NODE))["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 1


class TestValuesSchema:
    def test_a_bad_values_file_is_refused_with_every_mistake_named(
        self, helm: Helm, tmp_path: Path
    ) -> None:
        bad = write_values(
            tmp_path / "bad.yaml",
            {
                "gateway": {"replicas": 3, "autoscaling": {"maxReplicas": "ten"}},
                "node": {"gpu": {"count": 0}, "device": "tpu"},
                "database": {"url": "mysql://ledger"},
                "environment": "staging",
            },
        )
        result = helm.run("template", RELEASE, str(CHART), "-f", str(bad))
        assert result.returncode != 0
        assert "values don't meet the specifications of the schema" in result.stderr
        for mistake in (
            "additional properties 'replicas' not allowed",
            "/gateway/autoscaling/maxReplicas': got string, want integer",
            "/node/gpu/count': minimum: got 0, want 1",
            "/node/device': 'tpu' does not match pattern",
            "/database/url': 'mysql://ledger' does not match pattern",
            "/environment': value must be one of",
        ):
            assert mistake in result.stderr
        lint = helm.run("lint", str(CHART), "-f", str(bad))
        assert lint.returncode != 0
        assert "additional properties 'replicas' not allowed" in lint.stdout

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            (
                {"gateway": {"replicaCount": 3}},
                "more than one gateway replica needs job audio storage every replica mounts",
            ),
            (
                {
                    "gateway": {"autoscaling": {"enabled": True}, "jobStorage": {"create": True}},
                    "redis": {"enabled": False},
                },
                "more than one gateway replica needs Redis",
            ),
            (
                {"secrets": {"adminJwtSecret": {"enabled": False}}},
                "the admin API needs secrets.adminJwtSecret.enabled or gateway.admin.jwksUrl",
            ),
            (
                {"gateway": {"admin": {"jwksUrl": "https://sso.example.com/jwks"}}}
                | {"secrets": {"adminJwtSecret": {"enabled": False}}},
                "tests need secrets.adminJwtSecret.enabled to make a key",
            ),
            (
                {"gateway": {"httpRoute": {"enabled": True}}},
                "gateway.httpRoute.parentRefs names the Gateway to attach to",
            ),
            ({"node": {"enabled": False}}, "the gateway needs nodes"),
        ],
    )
    def test_settings_that_cannot_work_are_refused(
        self, helm: Helm, tmp_path: Path, values: dict[str, Any], message: str
    ) -> None:
        result = helm.run(
            "template", RELEASE, str(CHART), "-f", str(write_values(tmp_path / "v.yaml", values))
        )
        assert result.returncode != 0
        assert message in result.stderr

    def test_unshared_job_storage_is_allowed_when_acknowledged(
        self, helm: Helm, tmp_path: Path
    ) -> None:
        values = {"gateway": {"replicaCount": 3, "jobStorage": {"acceptUnshared": True}}}
        manifests = helm.template(write_values(tmp_path / "v.yaml", values))
        deployment = one(manifests, "Deployment", GATEWAY)
        assert deployment["spec"]["replicas"] == 3
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert {"name": "job-audio", "emptyDir": {}} in volumes

    def test_nodes_elsewhere_instead_of_the_statefulset(self, helm: Helm, tmp_path: Path) -> None:
        values = {
            "node": {"enabled": False},
            "gateway": {"extraNodes": ["http://gpu-1.example.internal:8001"]},
        }
        manifests = helm.template(write_values(tmp_path / "v.yaml", values))
        assert by_kind(manifests, "StatefulSet") == {}
        assert NODE not in by_kind(manifests, "NetworkPolicy")
        env = env_of(container(one(manifests, "Deployment", GATEWAY)))
        assert env["GATEWAY_NODES"] == "http://gpu-1.example.internal:8001"


class TestGateway:
    def test_probes_security_and_resources(self, helm: Helm) -> None:
        deployment = one(render(helm, "default"), "Deployment", GATEWAY)
        pod = deployment["spec"]["template"]["spec"]
        gateway = container(deployment)
        assert gateway["command"] == ["asrgw", "gateway"]
        assert gateway["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
        assert gateway["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
        assert gateway["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        assert gateway["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        # Read-only root: what the gateway writes goes to volumes.
        mounts = {mount["mountPath"] for mount in gateway["volumeMounts"]}
        assert mounts == {"/tmp", "/var/lib/asrgw/job-audio"}
        assert gateway["resources"]["requests"]["cpu"]
        assert gateway["resources"]["limits"]["memory"]
        assert gateway["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
        selector = deployment["spec"]["selector"]["matchLabels"]
        spread = pod["topologySpreadConstraints"]
        assert {item["topologyKey"] for item in spread} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }
        assert all(item["labelSelector"]["matchLabels"] == selector for item in spread)

    def test_environment_follows_the_nodes_by_dns_and_never_migrates(self, helm: Helm) -> None:
        manifests = render(helm, "default")
        env = env_of(container(one(manifests, "Deployment", GATEWAY)))
        assert env["GATEWAY_NODES"] == (f"dns+http://{HEADLESS}.{NAMESPACE}.svc.cluster.local:8001")
        assert env["GATEWAY_MIGRATE_ON_START"] == "false"
        assert env["GATEWAY_ENVIRONMENT"] == "production"
        assert env["GATEWAY_HOST"] == "0.0.0.0"
        assert secret_ref(env["BILLING_DATABASE_URL"]) == (f"{FULLNAME}-database", "database-url")
        assert secret_ref(env["GATEWAY_REDIS_URL"]) == (f"{FULLNAME}-database", "redis-url")
        assert secret_ref(env["GATEWAY_NODE_SECRET"]) == (FULLNAME, "node-secret")
        assert secret_ref(env["GATEWAY_ADMIN_JWT_SECRET"]) == (FULLNAME, "admin-jwt-secret")
        assert secret_ref(env["GATEWAY_METRICS_TOKEN"]) == (FULLNAME, "metrics-token")
        assert "GATEWAY_FORWARDED_ALLOW_IPS" not in env  # no proxy is believed unless named
        service = one(manifests, "Service", GATEWAY)
        assert service["spec"]["ports"][0]["targetPort"] == "http"

    def test_autoscaling_sso_ingress_and_shared_job_storage(self, helm: Helm) -> None:
        manifests = render(helm, "sso-autoscaling")
        deployment = one(manifests, "Deployment", GATEWAY)
        assert "replicas" not in deployment["spec"]  # the HPA owns the count
        hpa = one(manifests, "HorizontalPodAutoscaler", GATEWAY)
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
        assert hpa["spec"]["scaleTargetRef"]["name"] == GATEWAY
        assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 65
        env = env_of(container(deployment))
        assert env["GATEWAY_ADMIN_JWKS_URL"].startswith("https://sso.example.com/")
        assert env["GATEWAY_ADMIN_JWT_SECRET"] == ""  # HS256 off: SSO tokens only
        assert env["GATEWAY_ADMIN_JWT_ISSUER"] == "https://sso.example.com/realms/ops"
        assert env["GATEWAY_FORWARDED_ALLOW_IPS"] == "10.42.0.0/16"
        assert secret_ref(env["BILLING_DATABASE_URL"]) == ("asrgw-ledger", "database-url")
        assert "admin-jwt-secret" not in one(manifests, "Secret", FULLNAME)["data"]
        assert f"{FULLNAME}-database" not in by_kind(manifests, "Secret")
        ingress = one(manifests, "Ingress", GATEWAY)
        assert ingress["spec"]["rules"][0]["host"] == "asr.example.com"
        assert ingress["spec"]["tls"][0]["secretName"] == "asr-example-com-tls"
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": GATEWAY, "port": {"name": "http"}}
        claim = one(manifests, "PersistentVolumeClaim", f"{GATEWAY}-job-audio")
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        shared = {"claimName": claim["metadata"]["name"]}
        assert {"name": "job-audio", "persistentVolumeClaim": shared} in volumes
        assert one(manifests, "PodDisruptionBudget", GATEWAY)["spec"] == {
            "minAvailable": 2,
            "selector": deployment["spec"]["selector"],
        }

    def test_an_http_route_attaches_to_the_named_gateway(self, helm: Helm, tmp_path: Path) -> None:
        values = {
            "gateway": {
                "httpRoute": {
                    "enabled": True,
                    "parentRefs": [{"name": "public", "namespace": "gateways"}],
                    "hostnames": ["asr.example.com"],
                }
            }
        }
        route = one(
            helm.template(write_values(tmp_path / "route.yaml", values)), "HTTPRoute", GATEWAY
        )
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
        assert route["spec"]["rules"][0]["backendRefs"] == [{"name": GATEWAY, "port": 80}]


class TestNodes:
    def test_a_cpu_node_statefulset_behind_a_headless_service(self, helm: Helm) -> None:
        manifests = render(helm, "default")
        statefulset = one(manifests, "StatefulSet", NODE)
        node = container(statefulset)
        headless = one(manifests, "Service", HEADLESS)
        assert statefulset["spec"]["serviceName"] == HEADLESS
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["publishNotReadyAddresses"] is False
        assert headless["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
        assert node["image"] == "asrgw-node:0.1.0"
        assert "nvidia.com/gpu" not in json.dumps(node["resources"])
        assert node["startupProbe"]["httpGet"]["path"] == "/health/live"
        assert node["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert node["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert node["securityContext"]["readOnlyRootFilesystem"] is True
        assert statefulset["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        env = env_of(node)
        gateway_env = env_of(container(one(manifests, "Deployment", GATEWAY)))
        # Both ends of the node secret read the same Secret key.
        assert env["INFERENCE_NODE_SECRET"] == gateway_env["GATEWAY_NODE_SECRET"]
        assert env["INFERENCE_METRICS_TOKEN"] == gateway_env["GATEWAY_METRICS_TOKEN"]
        assert (env["INFERENCE_HOST"], env["INFERENCE_PORT"]) == ("0.0.0.0", "8001")
        # Production: the node refuses to start without a secret of 32+ characters.
        assert env["INFERENCE_ENVIRONMENT"] == gateway_env["GATEWAY_ENVIRONMENT"] == "production"
        assert env["INFERENCE_MODELS"] == "pocketsphinx-en"
        # OpenAI's model names (whisper-1) reach a model the nodes serve.
        assert gateway_env["GATEWAY_DEFAULT_MODEL"] == "pocketsphinx-en"

    def test_a_default_model_set_in_gateway_env_is_the_only_one(
        self, helm: Helm, tmp_path: Path
    ) -> None:
        values = write_values(
            tmp_path / "values.yaml", {"gateway": {"env": {"GATEWAY_DEFAULT_MODEL": "other"}}}
        )
        gateway = container(one(helm.template(values), "Deployment", GATEWAY))
        names = [variable["name"] for variable in gateway["env"]]
        assert names.count("GATEWAY_DEFAULT_MODEL") == 1
        assert env_of(gateway)["GATEWAY_DEFAULT_MODEL"] == "other"

    def test_gpu_nodes(self, helm: Helm) -> None:
        manifests = render(helm, "gpu-nodes")
        statefulset = one(manifests, "StatefulSet", NODE)
        pod = statefulset["spec"]["template"]["spec"]
        node = container(statefulset)
        assert statefulset["spec"]["replicas"] == 4
        assert node["image"] == "asrgw-node-gpu:0.1.0"
        assert node["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert node["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert node["resources"]["requests"]["memory"] == "16Gi"
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert pod["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert pod["terminationGracePeriodSeconds"] == 300
        env = env_of(node)
        assert (env["INFERENCE_DEVICE"], env["INFERENCE_MODELS"]) == (
            "cuda:0",
            "paraformer-zh,paraformer-zh-streaming,pocketsphinx-en",
        )
        assert env["INFERENCE_MAX_BATCH"] == "32"
        gateway_env = env_of(container(one(manifests, "Deployment", GATEWAY)))
        assert gateway_env["GATEWAY_DEFAULT_MODEL"] == "paraformer-zh"
        assert gateway_env["GATEWAY_ONLINE_MODEL"] == "paraformer-zh-streaming"
        (claim,) = statefulset["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "model-cache"
        assert claim["spec"]["resources"]["requests"]["storage"] == "30Gi"
        assert env["MODELSCOPE_CACHE"].startswith(
            next(m["mountPath"] for m in node["volumeMounts"] if m["name"] == "model-cache")
        )


class TestMigrationsHook:
    def test_asrgw_migrate_runs_before_install_and_upgrade(self, helm: Helm) -> None:
        manifests = render(helm, "default")
        job = one(manifests, "Job", MIGRATIONS)
        hook_secret = one(manifests, "Secret", MIGRATIONS)
        assert hook(job) == (
            "pre-install,pre-upgrade",
            "0",
            "before-hook-creation,hook-succeeded",
        )
        # The release's Secrets do not exist yet at pre-install: the hook brings its own, first.
        assert hook(hook_secret)[:2] == ("pre-install,pre-upgrade", "-10")
        migrate = container(job)
        assert migrate["command"] == ["asrgw", "migrate"]
        assert secret_ref(env_of(migrate)["BILLING_DATABASE_URL"]) == (MIGRATIONS, "database-url")
        database = one(manifests, "Secret", f"{FULLNAME}-database")
        assert hook_secret["stringData"] == {"database-url": database["stringData"]["database-url"]}
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert migrate["securityContext"]["readOnlyRootFilesystem"] is True

    def test_an_existing_database_secret_is_read_directly(self, helm: Helm) -> None:
        manifests = render(helm, "sso-autoscaling")
        assert MIGRATIONS not in by_kind(manifests, "Secret")
        env = env_of(container(one(manifests, "Job", MIGRATIONS)))
        assert secret_ref(env["BILLING_DATABASE_URL"]) == ("asrgw-ledger", "database-url")


class TestSecrets:
    def test_generated_secrets_are_long_and_random(self, helm: Helm) -> None:
        first = one(render(helm, "default"), "Secret", FULLNAME)["data"]
        second = one(render(helm, "default"), "Secret", FULLNAME)["data"]
        assert set(first) == {"node-secret", "admin-jwt-secret", "metrics-token"}
        for key, value in first.items():
            assert len(base64.b64decode(value)) == 48
            assert value != second[key]

    def test_given_values_are_used_as_they_are(self, helm: Helm, tmp_path: Path) -> None:
        values = {"secrets": {"nodeSecret": {"value": "n" * 40}}}
        data = one(helm.template(write_values(tmp_path / "v.yaml", values)), "Secret", FULLNAME)
        assert base64.b64decode(data["data"]["node-secret"]) == b"n" * 40

    def test_generated_secrets_survive_an_upgrade(self, helm: Helm, tmp_path: Path) -> None:
        with kube_api(RELEASE, tmp_path) as (api, kubeconfig):
            options = ("--dry-run=server", "--disable-openapi-validation")
            environment = {"KUBECONFIG": str(kubeconfig)}
            install = helm.run(
                "template", RELEASE, str(CHART), "-n", NAMESPACE, *options, **environment
            )
            assert install.returncode == 0, install.stderr
            installed = one(list(yaml.safe_load_all(install.stdout)), "Secret", FULLNAME)["data"]
            # The cluster now holds what the install created; an upgrade renders again.
            api.secrets[(NAMESPACE, FULLNAME)] = installed
            upgrade = helm.run(
                "template", RELEASE, str(CHART), "-n", NAMESPACE, *options, **environment
            )
            assert upgrade.returncode == 0, upgrade.stderr
            upgraded = one(list(yaml.safe_load_all(upgrade.stdout)), "Secret", FULLNAME)["data"]
        assert upgraded == installed
        assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{FULLNAME}" in api.requests


class TestNetworkPolicy:
    def test_nodes_take_traffic_from_the_gateways_and_the_scrapers_only(self, helm: Helm) -> None:
        manifests = render(helm, "default")
        policy = one(manifests, "NetworkPolicy", NODE)
        gateway_labels = one(manifests, "Deployment", GATEWAY)["spec"]["selector"]["matchLabels"]
        node_labels = one(manifests, "StatefulSet", NODE)["spec"]["selector"]["matchLabels"]
        assert policy["spec"]["podSelector"]["matchLabels"] == node_labels
        (rule,) = policy["spec"]["ingress"]
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
        assert rule["from"] == [
            {"podSelector": {"matchLabels": gateway_labels}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        ]
        open_gateway = one(manifests, "NetworkPolicy", GATEWAY)["spec"]["ingress"]
        assert open_gateway == [{"ports": [{"port": "http", "protocol": "TCP"}]}]

    def test_a_restricted_gateway_still_admits_helm_test(self, helm: Helm) -> None:
        manifests = render(helm, "sso-autoscaling")
        (rule,) = one(manifests, "NetworkPolicy", GATEWAY)["spec"]["ingress"]
        test_labels = one(manifests, "Pod", f"{FULLNAME}-test")["metadata"]["labels"]
        peers = rule["from"]
        assert peers[0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "ingress-nginx"
        }
        assert peers[1]["podSelector"]["matchLabels"].items() <= test_labels.items()


class TestMonitoring:
    def test_service_monitors_scrape_with_the_metrics_token_under_the_dashboards_job_names(
        self, helm: Helm
    ) -> None:
        manifests = render(helm, "sso-autoscaling")
        monitors = by_kind(manifests, "ServiceMonitor")
        jobs = {}
        for name, monitor in monitors.items():
            (endpoint,) = monitor["spec"]["endpoints"]
            assert endpoint["authorization"]["credentials"] == {
                "name": FULLNAME,
                "key": "metrics-token",
            }
            assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
            jobs[name] = endpoint["relabelings"][0]["replacement"]
        assert jobs == {GATEWAY: "asrgw", NODE: "asrnode"}
        gateway_service = one(manifests, "Service", GATEWAY)["metadata"]["labels"]
        selector = monitors[GATEWAY]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= gateway_service.items()

    def test_the_rules_and_dashboards_are_the_repositorys(self, helm: Helm) -> None:
        manifests = render(helm, "sso-autoscaling")
        rule = one(manifests, "PrometheusRule", FULLNAME)
        repository_rules = yaml.safe_load((ROOT / "prometheus" / "rules.yml").read_text())
        assert rule["spec"]["groups"] == repository_rules["groups"]
        dashboards = {
            key: json.loads(value)
            for config_map in by_kind(manifests, "ConfigMap").values()
            if config_map["metadata"]["labels"].get("grafana_dashboard") == "1"
            for key, value in config_map["data"].items()
        }
        repository_dashboards = {
            path.name: json.loads(path.read_text())
            for path in (ROOT / "grafana" / "dashboards").glob("*.json")
        }
        assert dashboards == repository_dashboards


class TestHelmTest:
    def test_the_test_pod_runs_the_shipped_script_against_the_gateway_service(
        self, helm: Helm
    ) -> None:
        manifests = render(helm, "default")
        pod = one(manifests, "Pod", f"{FULLNAME}-test")
        script = one(manifests, "ConfigMap", f"{FULLNAME}-test")
        assert hook(pod)[0] == hook(script)[0] == "test"
        assert script["data"]["helm_test.py"] == (CHART / "files" / "helm_test.py").read_text()
        test = pod["spec"]["containers"][0]
        assert test["command"] == ["python", "/opt/asrgw-test/helm_test.py"]
        env = env_of(test)
        assert env["ASRGW_BASE_URL"] == f"http://{GATEWAY}:80"
        assert secret_ref(env["GATEWAY_ADMIN_JWT_SECRET"]) == (FULLNAME, "admin-jwt-secret")
        # A client minting a token: it listens nowhere and is not handed the node secret.
        assert env["GATEWAY_ENVIRONMENT"] == "development"
        assert "GATEWAY_NODE_SECRET" not in env
        assert test["securityContext"]["readOnlyRootFilesystem"] is True

    def test_with_sso_only_the_test_uses_a_stored_key(self, helm: Helm) -> None:
        pod = one(render(helm, "sso-autoscaling"), "Pod", f"{FULLNAME}-test")
        env = env_of(pod["spec"]["containers"][0])
        assert secret_ref(env["ASRGW_API_KEY"]) == ("asrgw-helm-test-key", "api-key")
        assert "GATEWAY_ADMIN_JWT_SECRET" not in env


def value_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the values the schema describes, down to open objects and scalars."""
    closed = schema.get("additionalProperties") is False and "properties" in schema
    if not closed:
        return [prefix]
    return [
        path
        for key, child in schema["properties"].items()
        for path in value_paths(child, f"{prefix}.{key}" if prefix else key)
    ]


class TestDocs:
    def test_every_value_is_in_the_values_table_and_the_table_names_no_other(self) -> None:
        schema = json.loads((CHART / "values.schema.json").read_text())
        paths = value_paths(schema)
        docs = (ROOT / "docs" / "deploy.md").read_text()
        table = docs.split("### Values", 1)[1].split("\n### ", 1)[0]
        documented = {
            name
            for line in table.splitlines()
            if line.startswith("| `")
            for name in re.findall(r"`([a-zA-Z][\w.]*)`", line.split(" | ")[0])
        }
        # A probe's timing fields are described once for all probes.
        undocumented = [
            path
            for path in paths
            if path not in documented and path.rsplit(".", 1)[0] not in documented
        ]
        assert undocumented == []
        unknown = {
            name
            for name in documented
            if name not in paths and not any(path.startswith(f"{name}.") for path in paths)
        }
        assert unknown == set()

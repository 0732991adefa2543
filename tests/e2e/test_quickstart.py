"""The whole product as a customer meets it: real uvicorn processes on loopback, a key made by the
CLI, the official OpenAI SDK, and the ledger checked afterwards."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from billing.db import Database
from tests.conftest import NODE_SECRET
from tests.fixtures.factories import usage_rows
from tests.fixtures.processes import ROOT, asrgw, free_port, running

pytestmark = pytest.mark.e2e


@pytest.fixture
def ledger_env(database_url: str) -> dict[str, str]:
    return {"BILLING_DATABASE_URL": database_url}


def cli_key(env: dict[str, str], tenant: str) -> str:
    created = asrgw("admin", "tenant", "create", tenant, env=env)
    assert created.returncode == 0, created.stderr
    made = asrgw("admin", "key", "create", "--tenant", tenant, "--name", "sdk", env=env)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert re.fullmatch(r"sk-asrgw-[0-9a-f]{12}_\S+", secret)
    assert "shown only now" in made.stderr
    return secret


class TestSeparateProcesses:
    def test_openai_sdk_transcript_is_billed_once(
        self,
        tmp_path: Path,
        node_url: str,
        ledger_env: dict[str, str],
        database_url: str,
        weather_wav: Path,
    ) -> None:
        key = cli_key(ledger_env, "sdk-customer")
        port = free_port()
        gateway_env = {
            **ledger_env,
            "GATEWAY_NODES": node_url,
            "GATEWAY_NODE_SECRET": NODE_SECRET,
        }
        base_url = f"http://127.0.0.1:{port}"
        with running(
            ["gateway", "--port", str(port)],
            gateway_env,
            f"{base_url}/health/ready",
            tmp_path / "gateway.log",
        ):
            client = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
            with weather_wav.open("rb") as audio:
                transcription = client.audio.transcriptions.create(model="whisper-1", file=audio)

        assert "weather" in transcription.text
        assert "today" in transcription.text
        database = Database(database_url)
        try:
            (row,) = usage_rows(database)
        finally:
            database.dispose()
        assert row.output_tokens == len("".join(transcription.text.split()))
        assert row.price_per_1k_tokens_micros == 20_000  # the standard plan the CLI assigned
        assert row.cost_micros == (row.output_tokens * 20_000 + 500) // 1000

        report = asrgw("admin", "usage", "--tenant", "sdk-customer", env=ledger_env)
        assert report.returncode == 0, report.stderr
        line = next(line for line in report.stdout.splitlines() if "sdk-customer" in line)
        cells = line.split()
        assert cells[3] == "1"  # requests
        assert cells[5] == str(row.output_tokens)
        assert cells[6] == str(row.cost_micros)


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """``asrgw up`` as the README runs it, in a scratch directory on its embedded defaults."""
    gateway_port, node_port = free_port(), free_port()
    env = {
        **os.environ,
        "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'asrgw.db'}",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("INFERENCE_MODELS", None)
    env.pop("GATEWAY_DEFAULT_MODEL", None)
    log = (tmp_path / "up.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli.main",
            "up",
            "--port",
            str(gateway_port),
            "--node-port",
            str(node_port),
            "--data-dir",
            str(tmp_path / "var"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        output = ""
        while "Stop:" not in output:
            assert process.poll() is None, output
            assert time.monotonic() < deadline, output
            time.sleep(0.2)
            output = (tmp_path / "up.log").read_text()
        yield output, f"http://127.0.0.1:{gateway_port}", env
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    assert process.returncode == 0, (tmp_path / "up.log").read_text()


class TestUp:
    def test_printed_key_and_snippet_work(
        self, quickstart: tuple[str, str, dict[str, str]], tmp_path: Path
    ) -> None:
        output, base_url, env = quickstart
        key = re.search(r"demo key\s+(sk-asrgw-\S+)", output)
        assert key is not None, output
        assert f'OpenAI(base_url="{base_url}/v1", api_key="{key.group(1)}")' in output
        curl = re.search(r"curl (\S+) -H \"Authorization: Bearer (\S+)\"", output)
        assert curl is not None
        assert curl.group(2) == key.group(1)
        sample = re.search(r"-F file=@(\S+)", output)
        assert sample is not None
        client = OpenAI(base_url=f"{base_url}/v1", api_key=key.group(1), max_retries=0)
        with open(sample.group(1), "rb") as audio:
            text = client.audio.transcriptions.create(model="whisper-1", file=audio).text
        assert "weather" in text
        assert "tomorrow" in text

        usage = subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", "admin", "usage"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        demo = next(line for line in usage.stdout.splitlines() if line.startswith("demo"))
        assert demo.split()[3] == "1"
        assert (tmp_path / "var" / "demo-api-key").read_text().strip() == key.group(1)
        assert oct((tmp_path / "var" / "demo-api-key").stat().st_mode & 0o777) == "0o600"

        # The printed admin call works as printed, and the demo tenant is there.
        admin = re.search(r"curl (\S+/admin/tenants) -H \"Authorization: Bearer (\S+)\"", output)
        assert admin is not None, output
        tenants = httpx.get(admin.group(1), headers={"Authorization": f"Bearer {admin.group(2)}"})
        assert tenants.status_code == 200
        assert [tenant["name"] for tenant in tenants.json()] == ["demo"]

        # The console is where the banner says, and its first user signs in as printed.
        console = re.search(r"console\s+(\S+/console)\s+\(user (\S+), password (\S+)\)", output)
        assert console is not None, output
        assert console.group(2) == "admin"
        saved = tmp_path / "var" / "console-admin-password"
        assert saved.read_text().strip() == console.group(3)
        assert oct(saved.stat().st_mode & 0o777) == "0o600"
        with httpx.Client() as browser:
            form = browser.get(f"{console.group(1)}/sign-in", headers={"Accept": "text/html"})
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert token is not None
            signed_in = browser.post(
                f"{console.group(1)}/sign-in",
                data={
                    "username": console.group(2),
                    "password": console.group(3),
                    "csrf_token": token.group(1),
                },
                headers={"Accept": "text/html"},
            )
            overview = browser.get(console.group(1), headers={"Accept": "text/html"})
        assert signed_in.status_code == 303
        assert "<h1>Overview</h1>" in overview.text


class TestUpRefusesTakenPorts:
    """``asrgw up`` stops before starting anything when whatever holds a port would answer in
    the product's place."""

    def up(self, tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'asrgw.db'}",
            "PYTHONPATH": str(ROOT),
        }
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", "up", *options],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def test_the_same_port_for_gateway_and_node(self, tmp_path: Path) -> None:
        port = str(free_port())
        refused = self.up(tmp_path, "--port", port, "--node-port", port)
        assert refused.returncode == 1
        assert f"need different ports (both are {port})" in refused.stderr
        assert not (tmp_path / "asrgw.db").exists()

    @pytest.mark.parametrize("option", ["--port", "--node-port"])
    def test_a_port_something_already_listens_on(self, tmp_path: Path, option: str) -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken = holder.getsockname()[1]
            other = "--node-port" if option == "--port" else "--port"
            refused = self.up(tmp_path, option, str(taken), other, str(free_port()))
        assert refused.returncode == 1
        assert f"port {taken} on 127.0.0.1 is already in use" in refused.stderr
        assert f"choose another with {option}" in refused.stderr
        assert not (tmp_path / "asrgw.db").exists()

"""``asrgw up``: the whole product on one machine, on embedded defaults."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import click
import httpx

from billing.audit.service import cli_actor
from billing.config import BillingSettings
from billing.db import Database
from billing.errors import InvalidApiKey
from billing.keys.service import authenticate, create_api_key
from billing.migrate import upgrade_to_head
from billing.tenants import repository as tenants_repository
from billing.tenants.service import create_tenant
from gateway.admin.auth import Scope, mint_token
from gateway.cli.startup import refuse_unsafe_bind, settings_or_exit
from gateway.config import GatewaySettings
from gateway.console.roles import Role
from gateway.console.users.service import check_password, create_user, list_users

DEMO_TENANT = "demo"
ADMIN_TOKEN_HOURS = 12
DEMO_KEY_FILE = "demo-api-key"
CONSOLE_ADMIN = "admin"
CONSOLE_PASSWORD_FILE = "console-admin-password"
# The node's embedded default (inference.config.DEFAULT_MODELS, not imported: the gateway
# installs without the node's packages).
DEFAULT_MODELS = "whisper-tiny.en"
SAMPLE_AUDIO = Path(__file__).resolve().parents[2] / "docs" / "samples" / "weather.wav"


def ensure_demo_key(database: Database, key_file: Path) -> str:
    """The demo tenant's key: created once, kept (0600) in ``key_file`` so later runs reuse it."""
    if key_file.exists():
        saved = key_file.read_text().strip()
        try:
            with database.transaction() as session:
                authenticate(session, saved)
            return saved
        except InvalidApiKey:
            pass  # revoked or expired since: issue a new one below
    actor = cli_actor()
    with database.transaction() as session:
        if tenants_repository.get_tenant_by_name(session, DEMO_TENANT) is None:
            create_tenant(session, DEMO_TENANT, actor=actor)
        created = create_api_key(session, DEMO_TENANT, name="demo", actor=actor)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(created.secret + "\n")
    return created.secret


def ensure_console_admin(database: Database, password_file: Path, production: bool) -> str:
    """How to sign in to the console, for the banner. On the embedded default (development) a
    first owner ``admin`` is created with a random password kept (0600) in ``password_file``,
    and reused on later runs. In production nothing is created and no password is printed."""
    with database.transaction() as session:
        users = list_users(session)
    if production:
        if users:
            return "sign in with your console user (asrgw admin user list)"
        return (
            "no console user yet: create one with\n"
            f"            {asrgw_command()} admin user create NAME --role owner"
        )
    if password_file.exists() and any(user.username == CONSOLE_ADMIN for user in users):
        saved = password_file.read_text().strip()
        with database.transaction() as session:
            if check_password(session, CONSOLE_ADMIN, saved) is not None:
                return f"user {CONSOLE_ADMIN}, password {saved}"
    if users:
        return "sign in with your console user (asrgw admin user list)"
    password = secrets.token_urlsafe(18)
    with database.transaction() as session:
        create_user(session, CONSOLE_ADMIN, Role.owner.value, password, actor=cli_actor())
    password_file.parent.mkdir(parents=True, exist_ok=True)
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n")
    return f"user {CONSOLE_ADMIN}, password {password}"


def refuse_taken_ports(host: str, port: int, node_port: int) -> None:
    """Fail before starting anything when the two ports are one, or either is already taken:
    otherwise whatever holds the port would answer in the product's place."""
    if port == node_port:
        raise click.ClickException(
            f"the gateway and the node need different ports (both are {port}): "
            "change --port or --node-port"
        )
    for address, number, option in (
        (host, port, "--port"),
        ("127.0.0.1", node_port, "--node-port"),
    ):
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            # As uvicorn binds: a port whose old connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, number))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise click.ClickException(
                        f"cannot bind {address}:{number}: {error}"
                    ) from error
                raise click.ClickException(
                    f"port {number} on {address} is already in use (another asrgw up?): "
                    f"stop what holds it or choose another with {option}"
                ) from error


def wait_ready(url: str, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"the {what} exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise click.ClickException(f"the {what} was not ready after {timeout:.0f}s ({url})")


def asrgw_command() -> str:
    """How to call this CLI again: ``asrgw`` when on PATH, else its virtualenv path."""
    if shutil.which("asrgw"):
        return "asrgw"
    return str(Path(sys.executable).parent / "asrgw")


def banner(
    gateway_url: str,
    node_url: str,
    models: str,
    database_url: str,
    key: str,
    admin_token: str,
    console_sign_in: str,
) -> str:
    sample = SAMPLE_AUDIO if SAMPLE_AUDIO.exists() else Path("speech.wav")
    return f"""
asr-billing-gateway is up.

  gateway   {gateway_url}   (OpenAI-compatible: POST /v1/audio/transcriptions)
  node      {node_url}   models: {models}
  ledger    {database_url}
  demo key  {key}
  console   {gateway_url}/console   ({console_sign_in})

Transcribe with curl:

  curl {gateway_url}/v1/audio/transcriptions -H "Authorization: Bearer {key}" \\
       -F file=@{sample} -F model=whisper-1

or with the OpenAI Python SDK:

  from openai import OpenAI
  client = OpenAI(base_url="{gateway_url}/v1", api_key="{key}")
  result = client.audio.transcriptions.create(model="whisper-1", file=open("{sample}", "rb"))
  print(result.text)

See what it cost:  {asrgw_command()} admin usage
Admin API (every scope, valid {ADMIN_TOKEN_HOURS} h; `asrgw admin token` mints more):

  curl {gateway_url}/admin/tenants -H "Authorization: Bearer {admin_token}"

Stop:              Ctrl-C
"""


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Gateway bind address.")
@click.option("--port", type=int, default=8000, show_default=True, help="Gateway port.")
@click.option("--node-port", type=int, default=8001, show_default=True, help="Node port.")
@click.option(
    "--models",
    default=None,
    help="Models for the local node [default: INFERENCE_MODELS or whisper-tiny.en].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var"),
    show_default=True,
    help="Where the demo key file is kept (the ledger is BILLING_DATABASE_URL).",
)
@click.option("--ready-timeout", type=float, default=600, show_default=True)
def up(
    host: str, port: int, node_port: int, models: str | None, data_dir: Path, ready_timeout: float
) -> None:
    """Start a local inference node and the gateway, with a demo tenant and key, and a first
    web console user (development only)."""
    refuse_taken_ports(host, port, node_port)
    node_secret = os.environ.get("INFERENCE_NODE_SECRET") or secrets.token_urlsafe(24)
    # Checked before anything is migrated or started: the gateway below would refuse anyway.
    gateway_settings = settings_or_exit(GatewaySettings).model_copy(
        update={"node_secret": node_secret}
    )
    refuse_unsafe_bind(host, gateway_settings.unsafe_to_bind(host))
    billing_settings = BillingSettings()
    upgrade_to_head(billing_settings.database_url)
    database = Database(billing_settings.database_url)
    try:
        key = ensure_demo_key(database, data_dir / DEMO_KEY_FILE)
        console_sign_in = ensure_console_admin(
            database,
            data_dir / CONSOLE_PASSWORD_FILE,
            production=gateway_settings.environment == "production",
        )
    finally:
        database.dispose()

    node_url = f"http://127.0.0.1:{node_port}"
    gateway_url = f"http://{host}:{port}"
    models = models or os.environ.get("INFERENCE_MODELS", DEFAULT_MODELS)
    environment = {
        **os.environ,
        "INFERENCE_NODE_SECRET": node_secret,
        "INFERENCE_MODELS": models,
        "GATEWAY_NODES": node_url,
        "GATEWAY_NODE_SECRET": node_secret,
        "GATEWAY_DEFAULT_MODEL": os.environ.get(
            "GATEWAY_DEFAULT_MODEL", models.split(",")[0].split("=")[0].strip()
        ),
    }
    command = [sys.executable, "-m", "gateway.cli.main"]
    # Both stop everything; SIGINT explicitly, since a background launch starts with it ignored.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        node = subprocess.Popen(
            [*command, "node", "--host", "127.0.0.1", "--port", str(node_port)], env=environment
        )
        processes.append(node)
        click.echo(f"starting the inference node on {node_url} (models: {models}) …", err=True)
        wait_ready(f"{node_url}/health/ready", node, "inference node", ready_timeout)
        gateway = subprocess.Popen(
            [*command, "gateway", "--host", host, "--port", str(port)], env=environment
        )
        processes.append(gateway)
        wait_ready(f"{gateway_url}/health/ready", gateway, "gateway", ready_timeout)
        admin_token = mint_token(
            GatewaySettings(),
            cli_actor().name,
            list(Scope),
            ttl_seconds=ADMIN_TOKEN_HOURS * 3600,
        )
        click.echo(
            banner(
                gateway_url,
                node_url,
                models,
                billing_settings.database_url,
                key,
                admin_token,
                console_sign_in,
            )
        )
        sys.stdout.flush()
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        raise click.ClickException("a component exited; stopping")
    except KeyboardInterrupt:
        click.echo("stopping …", err=True)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()

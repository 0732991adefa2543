"""``asrgw``: run the product and administer it."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import click

from gateway.cli import console_admin  # noqa: F401  (adds the console's commands to `admin`)
from gateway.cli.admin import admin
from gateway.cli.migrate import migrate
from gateway.cli.startup import refuse_unsafe_bind, settings_or_exit
from gateway.cli.transcribe import transcribe
from gateway.cli.up import up


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="info", show_default=True, help="Python log level.")
def cli(log_level: str) -> None:
    """asr-billing-gateway: metered speech recognition with an exact per-key ledger.

    Settings come from the environment (GATEWAY_*, BILLING_*, INFERENCE_*) or a .env file.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if logging.getLogger().level > logging.DEBUG:
        # Migration and per-request client chatter hides the output people came for.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)


@cli.command()
@click.option("--host", default=None, help="Bind address [default: GATEWAY_HOST or 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: GATEWAY_PORT or 8000].")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes sharing the port, one per core; more than one needs "
    "GATEWAY_REDIS_URL. /metrics then serves every worker's counts together.",
)
def gateway(host: str | None, port: int | None, workers: int) -> None:
    """Run the gateway (customer API) on its settings.

    On an address other than loopback it refuses to start with the built-in admin secret or an
    empty GATEWAY_NODE_SECRET.
    """
    import uvicorn

    from gateway.app import served_app
    from gateway.config import GatewaySettings
    from gateway.streaming.frames import websocket_max_message_bytes

    settings = settings_or_exit(GatewaySettings)
    host, port = host or settings.host, port or settings.port
    refuse_unsafe_bind(host, settings.unsafe_to_bind(host))
    proxies = settings.trusted_proxies
    served: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        # No WebSocket message larger than one item's audio (uvicorn's default is 16 MiB).
        "ws_max_size": websocket_max_message_bytes(settings),
        # X-Forwarded-For is believed from GATEWAY_FORWARDED_ALLOW_IPS only, never from
        # uvicorn's own default (127.0.0.1) or its FORWARDED_ALLOW_IPS: the sign-in and API key
        # throttles count what this says.
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or None,
    }
    if workers == 1:
        uvicorn.run(served_app(settings), **served)
        return
    if not settings.redis_url:
        # Each worker is a process with its own memory: counters kept there would let every
        # worker admit a key's whole limit.
        raise click.UsageError(
            "--workers above 1 needs GATEWAY_REDIS_URL, so that rate limits and requests in "
            "flight are counted once for all workers"
        )
    if settings.migrate_on_start:
        from billing.config import BillingSettings
        from billing.migrate import upgrade_to_head

        upgrade_to_head(BillingSettings().database_url)
    # Migrated once here; the workers, which inherit this environment, must not race to do it.
    os.environ["GATEWAY_MIGRATE_ON_START"] = "false"
    # Every worker counts its metrics into files here; any worker's /metrics serves them all.
    with tempfile.TemporaryDirectory(prefix="asrgw-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run("gateway.app:served_app", factory=True, workers=workers, **served)


@cli.command()
@click.option("--host", default=None, help="Bind address [default: INFERENCE_HOST or 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: INFERENCE_PORT or 8001].")
@click.option(
    "--models",
    default=None,
    help="Models to serve, e.g. 'whisper-tiny.en,paraformer-zh=/models/pz,pocketsphinx-en' "
    "[default: INFERENCE_MODELS or whisper-tiny.en].",
)
def node(host: str | None, port: int | None, models: str | None) -> None:
    """Run an inference node (needs the `node` extra).

    On an address other than loopback it refuses to start without INFERENCE_NODE_SECRET.
    """
    import uvicorn

    try:
        from inference.app import create_app
        from inference.config import InferenceSettings
    except ImportError as error:
        raise click.ClickException(
            f"the inference node needs the `node` extra ({error.name} is missing): "
            "pip install 'asr-billing-gateway[node]'"
        ) from None

    settings = settings_or_exit(InferenceSettings)
    if models:
        settings = settings.model_copy(update={"models": models})
    host = host or settings.host
    refuse_unsafe_bind(host, settings.unsafe_to_bind(host))
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port or settings.port,
        timeout_keep_alive=settings.keep_alive_seconds,
        log_level="info",
    )


cli.add_command(up)
cli.add_command(admin)
cli.add_command(migrate)
cli.add_command(transcribe)


if __name__ == "__main__":
    cli()

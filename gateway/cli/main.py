"""``asrgw``: run the product and administer it."""

from __future__ import annotations

import logging

import click

from gateway.cli.admin import admin
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
def gateway(host: str | None, port: int | None) -> None:
    """Run the gateway (customer API) on its settings."""
    import uvicorn

    from gateway.app import create_app
    from gateway.config import GatewaySettings

    settings = GatewaySettings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level="info",
    )


@cli.command()
@click.option("--host", default=None, help="Bind address [default: INFERENCE_HOST or 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: INFERENCE_PORT or 8001].")
@click.option(
    "--models",
    default=None,
    help="Models to serve, e.g. 'paraformer-zh=/models/pz,pocketsphinx-en' "
    "[default: INFERENCE_MODELS or pocketsphinx-en].",
)
def node(host: str | None, port: int | None, models: str | None) -> None:
    """Run an inference node (needs the `node` extra)."""
    import uvicorn

    try:
        from inference.app import create_app
        from inference.config import InferenceSettings
    except ImportError as error:
        raise click.ClickException(
            f"the inference node needs the `node` extra ({error.name} is missing): "
            "pip install 'asr-billing-gateway[node]'"
        ) from None

    settings = InferenceSettings()
    if models:
        settings = settings.model_copy(update={"models": models})
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level="info",
    )


cli.add_command(up)
cli.add_command(admin)
cli.add_command(transcribe)


if __name__ == "__main__":
    cli()

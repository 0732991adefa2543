"""``asrgw transcribe PATH… --out DIR``: a folder (or files) of audio to transcripts."""

from __future__ import annotations

import json
from pathlib import Path

import click
import httpx

from billing.money import format_micros
from gateway.batch.client import GatewayClient
from gateway.batch.runner import BatchOptions, BatchRunner, Summary, logger, open_log
from gateway.batch.scan import OUTPUT_EXTENSIONS, plan

SUMMARY_FILE = "asrgw-transcribe-summary.json"
LOG_FILE = "asrgw-transcribe.log"


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the transcripts (the inputs' folder structure is kept).",
)  # fmt: skip
@click.option(
    "--format", "output_format", type=click.Choice(sorted(OUTPUT_EXTENSIONS)), default="txt",
    show_default=True, help="txt (plain text), srt or vtt (subtitles), json (verbose_json).",
)  # fmt: skip
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--url", envvar="ASRGW_BASE_URL", default="http://127.0.0.1:8000", show_default=True,
    help="The gateway [env: ASRGW_BASE_URL].",
)  # fmt: skip
@click.option(
    "--api-key", envvar="ASRGW_API_KEY", required=True, show_envvar=True,
    help="The API key (prefer the environment variable: arguments show in process lists).",
)  # fmt: skip
@click.option("--model", default="whisper-1", show_default=True)
@click.option("--language", default=None, help="ISO 639-1 code; detected when left out.")
@click.option("--prompt", default=None, help="Words to bias recognition towards (hotwords).")
@click.option(
    "--long-seconds", type=click.FloatRange(min=1), default=300.0, show_default=True,
    help="Audio longer than this is sent as an asynchronous job.",
)  # fmt: skip
@click.option(
    "--max-retries", type=click.IntRange(0, 100), default=6, show_default=True,
    help="Retries of one request on 429/502/503/504 and connection errors.",
)  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=1), default=900.0, show_default=True,
              help="Seconds one HTTP request may take.")  # fmt: skip
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"Log of every file's outcome [default: OUT/{LOG_FILE}].")  # fmt: skip
def transcribe(
    paths: tuple[Path, ...],
    out_dir: Path,
    output_format: str,
    concurrency: int,
    url: str,
    api_key: str,
    model: str,
    language: str | None,
    prompt: str | None,
    long_seconds: float,
    max_retries: int,
    timeout: float,
    log_path: Path | None,
) -> None:
    """Transcribe audio files and folders into OUT: short files synchronously, long ones as
    jobs, CONCURRENCY at a time. Files whose transcript exists are skipped, so a rerun resumes.
    Exits 1 when any file failed."""
    items = plan(paths, out_dir, output_format)
    if not items:
        raise click.ClickException("no audio files found")
    handler = open_log(log_path or out_dir / LOG_FILE)
    options = BatchOptions(
        output_format=output_format,
        model=model,
        language=language,
        prompt=prompt,
        concurrency=concurrency,
        long_seconds=long_seconds,
    )
    limits = httpx.Limits(max_connections=concurrency + 2)
    headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "asrgw-transcribe/1"}
    try:
        with httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, limits=limits
        ) as http:
            summary = BatchRunner(GatewayClient(http, max_retries=max_retries), options).run(items)
        summary_path = out_dir / SUMMARY_FILE
        summary_path.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
        logger.info(json.dumps({"run_finished": summary.as_dict()}))
    finally:
        logger.removeHandler(handler)
        handler.close()
    report(summary, summary_path, log_path or out_dir / LOG_FILE)
    if summary.failed:
        raise SystemExit(1)


def report(summary: Summary, summary_path: Path, log_path: Path) -> None:
    tokens = sum(outcome.output_tokens for outcome in summary.outcomes)
    costs = ", ".join(
        format_micros(micros, currency) for currency, micros in summary.cost_by_currency().items()
    )
    minutes = sum(outcome.audio_seconds for outcome in summary.outcomes) / 60
    click.echo(
        f"done {summary.count('done')} · failed {summary.count('failed')} · "
        f"skipped {summary.count('skipped')} · {tokens} tokens · cost {costs or '0'} · "
        f"{minutes:.1f} audio min"
    )
    for outcome in summary.failed:
        click.echo(f"failed: {outcome.item.source}: {outcome.reason}", err=True)
    click.echo(f"summary: {summary_path}\nlog: {log_path}")

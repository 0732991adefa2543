"""``asrgw admin …``: tenants, plans, keys and usage, straight against the ledger database."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import click
from sqlmodel import Session

from billing.accounts import repository as accounts_repository
from billing.audit.service import cli_actor
from billing.config import BillingSettings
from billing.credits.service import add_credit
from billing.db import Database
from billing.errors import BillingError
from billing.invoices.service import build_draft, finalize, invoice_lines
from billing.keys.service import create_api_key, list_api_keys, revoke_api_key
from billing.migrate import upgrade_to_head
from billing.models import Plan, Tenant, TenantAccount, TenantPeriod
from billing.models.types import utcnow
from billing.money import format_micros
from billing.periods import billing_period
from billing.plans import repository as plans_repository
from billing.plans.service import create_plan
from billing.reconcile.service import reconcile
from billing.reports.service import parse_group_by, report_csv, usage_report
from billing.tenants import repository as tenants_repository
from billing.tenants.service import create_tenant, require_tenant
from billing.tokens import TokenUnit
from billing.usage.service import usage_per_key

T = TypeVar("T")


@contextmanager
def ledger_session() -> Iterator[Session]:
    """A committed unit of work on the configured ledger, migrated to head first."""
    settings = BillingSettings()
    upgrade_to_head(settings.database_url)
    database = Database(settings.database_url)
    try:
        with database.transaction() as session:
            yield session
    finally:
        database.dispose()


def run(action: Callable[[Session], T]) -> T:
    try:
        with ledger_session() as session:
            return action(session)
    except BillingError as error:
        raise click.ClickException(error.message) from None


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]

    def line(cells: list[str]) -> str:
        padded = (str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "  ".join(padded).rstrip()

    click.echo(line(headers))
    click.echo(line(["-" * width for width in widths]))
    for row in rows:
        click.echo(line(row))


@click.group()
def admin() -> None:
    """Administer tenants, plans, API keys and usage (uses BILLING_DATABASE_URL)."""


@admin.group()
def plan() -> None:
    """Price plans."""


@plan.command("create")
@click.argument("name")
@click.option(
    "--price-per-1k-micros",
    type=int,
    required=True,
    help="Price per 1,000 output tokens, in micro-units of the currency.",
)
@click.option("--unit", type=click.Choice([unit.value for unit in TokenUnit]), default="char")
@click.option("--currency", default="USD", show_default=True)
@click.option("--monthly-token-quota", type=int, default=None, help="Tokens per UTC month.")
@click.option("--requests-per-minute", type=int, default=None, help="Rate limit per key.")
@click.option("--concurrency-limit", type=int, default=None, help="Requests in flight per key.")
@click.option(
    "--max-tokens-per-audio-second",
    type=int,
    default=50,
    show_default=True,
    help="Reservation bound, and the most a request is billed per audio second.",
)
@click.option(
    "--cache-hit-price-bp",
    type=int,
    default=0,
    show_default=True,
    help="Price of a cache hit in basis points of the price (0 = free).",
)
def plan_create(
    name: str,
    price_per_1k_micros: int,
    unit: str,
    currency: str,
    monthly_token_quota: int | None,
    requests_per_minute: int | None,
    concurrency_limit: int | None,
    max_tokens_per_audio_second: int,
    cache_hit_price_bp: int,
) -> None:
    """Create a plan."""
    created = run(
        lambda session: create_plan(
            session,
            name,
            price_per_1k_tokens_micros=price_per_1k_micros,
            token_unit=unit,
            currency=currency,
            monthly_token_quota=monthly_token_quota,
            requests_per_minute=requests_per_minute,
            concurrency_limit=concurrency_limit,
            max_tokens_per_audio_second=max_tokens_per_audio_second,
            cache_hit_price_bp=cache_hit_price_bp,
            actor=cli_actor(),
        )
    )
    click.echo(
        f"plan {created.name}: "
        f"{format_micros(created.price_per_1k_tokens_micros, created.currency)} "
        f"per 1,000 {created.token_unit} tokens"
    )


@plan.command("list")
def plan_list() -> None:
    """List plans."""
    plans = run(lambda session: list(plans_repository.list_plans(session)))
    print_table(
        ["name", "price per 1k tokens", "unit"],
        [
            [
                item.name,
                format_micros(item.price_per_1k_tokens_micros, item.currency),
                item.token_unit,
            ]
            for item in plans
        ],
    )


@admin.group()
def tenant() -> None:
    """Tenants (customer accounts)."""


@tenant.command("create")
@click.argument("name")
@click.option("--plan", "plan_name", default=None, help="Plan name [default: standard].")
@click.option("--prepaid", is_flag=True, help="Spend prepaid credit; 402 when it runs out.")
def tenant_create(name: str, plan_name: str | None, prepaid: bool) -> None:
    """Create a tenant."""
    created = run(
        lambda session: create_tenant(
            session, name, plan_name=plan_name, prepaid=prepaid, actor=cli_actor()
        )
    )
    kind = "prepaid" if created.prepaid else "postpaid"
    click.echo(f"tenant {created.name} created (id {created.id}, {kind})")


@tenant.command("show")
@click.argument("name")
def tenant_show(name: str) -> None:
    """Credit, spend, open reservations and this month's tokens of a tenant."""

    def load(session: Session) -> tuple[Tenant, TenantAccount, TenantPeriod | None, Plan]:
        found = require_tenant(session, name)
        assert found.id is not None
        totals = accounts_repository.get_account(session, found.id)
        assert totals is not None
        period = accounts_repository.get_period(session, found.id, billing_period(utcnow()))
        plan_row = plans_repository.get_plan(session, found.plan_id)
        assert plan_row is not None
        return found, totals, period, plan_row

    found, totals, period, plan_row = run(load)
    currency = plan_row.currency
    quota = plan_row.monthly_token_quota
    used = period.tokens_used if period else 0
    reserved = period.tokens_reserved if period else 0
    print_table(
        ["field", "value"],
        [
            ["tenant", found.name],
            ["plan", plan_row.name],
            ["billing", "prepaid" if found.prepaid else "postpaid"],
            ["credit", format_micros(totals.credit_micros, currency)],
            ["spent", format_micros(totals.spent_micros, currency)],
            ["reserved", format_micros(totals.reserved_micros, currency)],
            ["available", format_micros(totals.available_micros, currency)],
            ["tokens this month", f"{used} used, {reserved} reserved"],
            ["monthly quota", str(quota) if quota is not None else "unlimited"],
        ],
    )


@admin.group()
def credit() -> None:
    """Prepaid credit."""


@credit.command("add")
@click.argument("tenant_name")
@click.option("--amount-micros", type=int, required=True, help="Micro-units of the currency.")
@click.option(
    "--idempotency-key",
    required=True,
    help="A key of yours (an invoice or payment id): the same key is applied only once.",
)
@click.option("--adjustment", is_flag=True, help="An adjustment (may be negative), not a top-up.")
@click.option("--note", default="", help="Why, for the record.")
def credit_add(
    tenant_name: str, amount_micros: int, idempotency_key: str, adjustment: bool, note: str
) -> None:
    """Add prepaid credit to a tenant, once per idempotency key."""
    entry, created = run(
        lambda session: add_credit(
            session,
            tenant_name,
            amount_micros,
            idempotency_key=idempotency_key,
            kind="adjustment" if adjustment else "topup",
            note=note,
            actor=cli_actor(),
        )
    )
    verb = "applied" if created else "already applied earlier; nothing changed"
    click.echo(f"{entry.kind} of {entry.amount_micros} micros for {tenant_name}: {verb}")


@tenant.command("list")
def tenant_list() -> None:
    """List tenants."""
    tenants = run(lambda session: list(tenants_repository.list_tenants(session)))
    print_table(
        ["id", "name", "created"],
        [
            [str(item.id), item.name, item.created_at.isoformat(timespec="seconds")]
            for item in tenants
        ],
    )


@admin.group()
def key() -> None:
    """Customer API keys."""


@key.command("create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant that owns the key.")
@click.option("--name", default="default", show_default=True, help="A label for the key.")
@click.option("--expires-in-days", type=int, default=None, help="Expire the key after N days.")
def key_create(tenant_name: str, name: str, expires_in_days: int | None) -> None:
    """Create a key. Its secret is printed once, on stdout, and never stored."""
    expires_in = timedelta(days=expires_in_days) if expires_in_days is not None else None
    created = run(
        lambda session: create_api_key(
            session, tenant_name, name=name, expires_in=expires_in, actor=cli_actor()
        )
    )
    click.echo(
        f"created key {created.key.prefix} ({created.key.name}) for tenant {created.key.tenant}; "
        "the secret below is shown only now:",
        err=True,
    )
    click.echo(created.secret)


@key.command("revoke")
@click.argument("prefix")
def key_revoke(prefix: str) -> None:
    """Revoke a key by its prefix (or the key itself)."""
    revoked = run(lambda session: revoke_api_key(session, prefix, actor=cli_actor()))
    click.echo(f"key {revoked.prefix} of tenant {revoked.tenant} revoked")


@key.command("list")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant's keys.")
def key_list(tenant_name: str | None) -> None:
    """List keys (never their secrets)."""
    keys = run(lambda session: list_api_keys(session, tenant_name))
    print_table(
        ["prefix", "tenant", "name", "created", "expires", "status"],
        [
            [
                item.prefix,
                item.tenant,
                item.name,
                item.created_at.isoformat(timespec="seconds"),
                item.expires_at.isoformat(timespec="seconds") if item.expires_at else "-",
                "revoked" if item.revoked_at else "active",
            ]
            for item in keys
        ],
    )


@admin.command("usage")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant's keys.")
def usage(tenant_name: str | None) -> None:
    """Usage per API key: requests, audio seconds, tokens and cost."""
    summaries = run(lambda session: usage_per_key(session, tenant_name))
    print_table(
        ["tenant", "key", "name", "requests", "audio_seconds", "tokens", "cost_micros", "cost"],
        [
            [
                item.tenant,
                item.key_prefix,
                item.key_name,
                str(item.requests),
                f"{item.audio_ms / 1000:.3f}",
                str(item.billed_tokens),
                str(item.cost_micros),
                format_micros(item.cost_micros, item.currency) if item.currency else "-",
            ]
            for item in summaries
        ],
    )


def parse_day(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-11-01") from None


@admin.command("report")
@click.option("--from", "start", required=True, help="First day, UTC (2026-11-01).")
@click.option("--to", "end", required=True, help="Day after the last, UTC (2026-12-01).")
@click.option(
    "--group-by",
    default="tenant",
    show_default=True,
    help="Comma-separated: tenant, key, model, day, month.",
)
@click.option("--format", "output_format", type=click.Choice(["csv", "json"]), default="csv")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of stdout.",
)
def report(
    start: str,
    end: str,
    group_by: str,
    output_format: str,
    tenant_name: str | None,
    output: Path | None,
) -> None:
    """Usage between two days, grouped, as CSV or JSON (integer micro-unit costs)."""
    try:
        groups = parse_group_by(group_by)
    except BillingError as error:
        raise click.BadParameter(error.message, param_hint="--group-by") from None
    rows = run(
        lambda session: usage_report(session, parse_day(start), parse_day(end), groups, tenant_name)
    )
    if output_format == "csv":
        text = report_csv(rows, groups)
    else:
        text = json.dumps([row.model_dump() for row in rows], indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"{len(rows)} rows written to {output}", err=True)


@admin.group()
def invoice() -> None:
    """Monthly invoices (UTC calendar months)."""


def _print_invoice(tenant_name: str, period: str) -> None:
    found, lines = run(lambda session: invoice_lines(session, tenant_name, period))
    click.echo(f"invoice {tenant_name} {found.period}: {found.state}")
    print_table(
        ["kind", "model", "key", "requests", "tokens", "amount_micros"],
        [
            [
                line.kind,
                line.model,
                line.api_key_prefix,
                str(line.requests),
                str(line.billed_tokens),
                str(line.amount_micros),
            ]
            for line in lines
        ],
    )
    click.echo(
        f"total: {found.total_micros} micros = {format_micros(found.total_micros, found.currency)}"
    )


@invoice.command("draft")
@click.argument("tenant_name")
@click.option("--period", required=True, help="Month, e.g. 2026-11.")
def invoice_draft(tenant_name: str, period: str) -> None:
    """Build (or rebuild) the month's draft from the ledger and show it."""
    run(lambda session: build_draft(session, tenant_name, period, actor=cli_actor()))
    _print_invoice(tenant_name, period)


@invoice.command("finalize")
@click.argument("tenant_name")
@click.option("--period", required=True, help="Month, e.g. 2026-11.")
def invoice_finalize(tenant_name: str, period: str) -> None:
    """Rebuild the draft one last time and freeze it; it never changes afterwards."""
    run(lambda session: finalize(session, tenant_name, period, actor=cli_actor()))
    _print_invoice(tenant_name, period)


@invoice.command("show")
@click.argument("tenant_name")
@click.option("--period", required=True, help="Month, e.g. 2026-11.")
def invoice_show(tenant_name: str, period: str) -> None:
    """Show an invoice as it stands."""
    _print_invoice(tenant_name, period)


@admin.command("reconcile")
@click.option("--period", required=True, help="Month to check, e.g. 2026-11.")
def reconcile_command(period: str) -> None:
    """Check that ledger rows, invoices, account totals and what clients were told all agree.
    Exits 1 and lists the differences when they do not."""
    findings = run(lambda session: reconcile(session, period))
    print_table(
        ["tenant", "check", "expected", "actual", "difference", "status", "detail"],
        [
            [
                finding.tenant,
                finding.check,
                str(finding.expected),
                str(finding.actual),
                str(finding.actual - finding.expected),
                "ok" if finding.ok else "MISMATCH",
                finding.detail,
            ]
            for finding in findings
        ],
    )
    bad = [finding for finding in findings if not finding.ok]
    if bad:
        raise click.ClickException(
            f"{len(bad)} of {len(findings)} checks for {period} do not reconcile"
        )
    click.echo(f"{len(findings)} checks for {period}: all reconcile")

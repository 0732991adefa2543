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

from billing import limits
from billing.audit.schemas import AuditQuery
from billing.audit.service import cli_actor
from billing.audit.service import find as find_audit_entries
from billing.config import BillingSettings
from billing.credits.service import add_credit
from billing.db import Database
from billing.errors import BillingError
from billing.invoices.service import build_draft, finalize, invoice_lines
from billing.keys.schemas import KeyScope
from billing.keys.service import create_api_key, list_api_keys, revoke_api_key, rotate_api_key
from billing.migrate import upgrade_to_head
from billing.money import format_micros
from billing.plans import repository as plans_repository
from billing.plans.schemas import PlanLimits, PlanPublic
from billing.plans.service import create_plan, update_plan
from billing.reconcile.service import reconcile
from billing.reports.service import parse_group_by, report_csv, usage_report
from billing.tenants import repository as tenants_repository
from billing.tenants.schemas import TenantUpdate
from billing.tenants.service import create_tenant, tenant_detail, update_tenant
from billing.tokens import TokenUnit
from billing.usage.service import usage_per_key
from gateway.admin.auth import Scope, mint_token
from gateway.config import GatewaySettings

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
    """Administer tenants, plans, API keys, credit, invoices, the audit log and the web
    console's users, sessions and portal links straight against the ledger
    (BILLING_DATABASE_URL); `token` mints admin API tokens."""


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


@plan.command("update")
@click.argument("name")
@click.option("--price-per-1k-micros", type=int, default=None, help="New price per 1,000 tokens.")
@click.option("--unit", type=click.Choice([unit.value for unit in TokenUnit]), default=None)
@click.option("--monthly-token-quota", type=int, default=None, help="Tokens per UTC month.")
@click.option("--requests-per-minute", type=int, default=None, help="Rate limit per key.")
@click.option("--concurrency-limit", type=int, default=None, help="Requests in flight per key.")
@click.option("--max-tokens-per-audio-second", type=int, default=None, help="Reservation bound.")
@click.option("--cache-hit-price-bp", type=int, default=None, help="Cache-hit price, basis points.")
@click.option(
    "--unlimited",
    multiple=True,
    type=click.Choice(["monthly-token-quota", "requests-per-minute", "concurrency-limit"]),
    help="Lift this limit (repeatable).",
)
def plan_update(
    name: str,
    price_per_1k_micros: int | None,
    unit: str | None,
    monthly_token_quota: int | None,
    requests_per_minute: int | None,
    concurrency_limit: int | None,
    max_tokens_per_audio_second: int | None,
    cache_hit_price_bp: int | None,
    unlimited: tuple[str, ...],
) -> None:
    """Change a plan's price or limits; past usage keeps the price it was billed at."""
    given = {
        "price_per_1k_tokens_micros": price_per_1k_micros,
        "token_unit": unit,
        "monthly_token_quota": monthly_token_quota,
        "requests_per_minute": requests_per_minute,
        "concurrency_limit": concurrency_limit,
        "max_tokens_per_audio_second": max_tokens_per_audio_second,
        "cache_hit_price_bp": cache_hit_price_bp,
    }
    changes: dict[str, int | str | None] = {
        field: value for field, value in given.items() if value is not None
    }
    changes |= {option.replace("-", "_"): None for option in unlimited}
    if not changes:
        raise click.UsageError("nothing to change: give at least one option")
    updated = run(
        lambda session: update_plan(
            session, name, PlanLimits.model_validate(changes), actor=cli_actor()
        )
    )
    click.echo(json.dumps(PlanPublic.of(updated).model_dump(mode="json"), indent=2))


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


@tenant.command("update")
@click.argument("name")
@click.option("--plan", "plan_name", default=None, help="Move the tenant to this plan.")
@click.option("--prepaid/--postpaid", default=None, help="Spend prepaid credit, or bill later.")
def tenant_update(name: str, plan_name: str | None, prepaid: bool | None) -> None:
    """Move a tenant to another plan, or between prepaid and postpaid."""
    if plan_name is None and prepaid is None:
        raise click.UsageError("nothing to change: give --plan or --prepaid/--postpaid")
    changes = TenantUpdate(plan=plan_name, prepaid=prepaid)
    run(lambda session: update_tenant(session, name, changes, actor=cli_actor()))
    click.echo(f"tenant {name} updated")


@tenant.command("show")
@click.argument("name")
def tenant_show(name: str) -> None:
    """Credit, spend, open reservations and this month's tokens of a tenant."""
    detail = run(lambda session: tenant_detail(session, name))
    balance = detail.balance
    quota = detail.monthly_token_quota
    print_table(
        ["field", "value"],
        [
            ["tenant", detail.tenant.name],
            ["plan", detail.tenant.plan],
            ["billing", "prepaid" if detail.tenant.prepaid else "postpaid"],
            ["credit", format_micros(balance.credit_micros, balance.currency)],
            ["spent", format_micros(balance.spent_micros, balance.currency)],
            ["reserved", format_micros(balance.reserved_micros, balance.currency)],
            ["available", format_micros(balance.available_micros, balance.currency)],
            [
                f"tokens in {detail.period}",
                f"{detail.tokens_used} used, {detail.tokens_reserved} reserved",
            ],
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
@click.option(
    "--expires-in-days",
    type=click.IntRange(1, limits.MAX_KEY_LIFETIME_DAYS),
    default=None,
    help="Expire the key after N days.",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice([scope.value for scope in KeyScope]),
    help="Allow only this (repeatable) [default: every scope].",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Allow only this model (repeatable) [default: every model].",
)
def key_create(
    tenant_name: str,
    name: str,
    expires_in_days: int | None,
    scopes: tuple[str, ...],
    models: tuple[str, ...],
) -> None:
    """Create a key. Its secret is printed once, on stdout, and never stored."""
    expires_in = timedelta(days=expires_in_days) if expires_in_days is not None else None
    created = run(
        lambda session: create_api_key(
            session,
            tenant_name,
            name=name,
            expires_in=expires_in,
            scopes=[KeyScope(scope) for scope in scopes] or None,
            allowed_models=list(models) or None,
            actor=cli_actor(),
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


@key.command("rotate")
@click.argument("prefix")
@click.option(
    "--grace-seconds",
    type=click.IntRange(0, limits.MAX_ROTATION_GRACE_SECONDS),
    default=86_400,
    show_default=True,
    help="How long the old key keeps working (0 ends it now).",
)
def key_rotate(prefix: str, grace_seconds: int) -> None:
    """Issue a successor key (secret printed once, on stdout); the old one works for the grace
    period."""
    rotation = run(
        lambda session: rotate_api_key(
            session, prefix, grace=timedelta(seconds=grace_seconds), actor=cli_actor()
        )
    )
    ends = rotation.old.expires_at.isoformat(timespec="seconds") if rotation.old.expires_at else "-"
    click.echo(
        f"key {rotation.new.key.prefix} replaces {rotation.old.prefix}, which works until {ends}; "
        "the new secret below is shown only now:",
        err=True,
    )
    click.echo(rotation.new.secret)


@key.command("list")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant's keys.")
def key_list(tenant_name: str | None) -> None:
    """List keys (never their secrets)."""
    keys = run(lambda session: list_api_keys(session, tenant_name))
    all_scopes = sorted(KeyScope)
    print_table(
        ["prefix", "tenant", "name", "created", "expires", "status", "scopes", "models"],
        [
            [
                item.prefix,
                item.tenant,
                item.name,
                item.created_at.isoformat(timespec="seconds"),
                item.expires_at.isoformat(timespec="seconds") if item.expires_at else "-",
                "revoked" if item.revoked_at else "active",
                "all" if item.scopes == all_scopes else ",".join(item.scopes),
                ",".join(item.allowed_models) if item.allowed_models is not None else "all",
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


@admin.command("audit")
@click.option("--actor", default=None, help="Only writes by this actor.")
@click.option("--action", default=None, help="Only this action, e.g. key.revoke.")
@click.option("--target-type", default=None, help="plan, tenant, api_key, invoice, node.")
@click.option("--target-id", default=None, help="Name, prefix or tenant/period of the target.")
@click.option("--since", type=click.DateTime(), default=None, help="From this UTC time.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Entries as JSON lines with before/after.")
def audit_command(
    actor: str | None,
    action: str | None,
    target_type: str | None,
    target_id: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """The audit log of admin writes, oldest first."""
    query = AuditQuery(
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=since,
        limit=limit,
    )
    entries = run(lambda session: find_audit_entries(session, query))
    if as_json:
        for entry in entries:
            click.echo(entry.model_dump_json())
        return
    print_table(
        ["id", "when", "actor", "action", "target"],
        [
            [
                str(entry.id),
                entry.occurred_at.isoformat(timespec="seconds"),
                entry.actor,
                entry.action,
                f"{entry.target_type}:{entry.target_id}",
            ]
            for entry in entries
        ],
    )


@admin.command("token")
@click.option("--subject", default=None, help="Who the token speaks for [default: cli:<user>].")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice([scope.value for scope in Scope]),
    help="Grant this scope (repeatable) [default: every scope].",
)
@click.option(
    "--expires-in", type=int, default=3600, show_default=True, help="Lifetime in seconds."
)
def token(subject: str | None, scopes: tuple[str, ...], expires_in: int) -> None:
    """Mint an HS256 admin API token from GATEWAY_ADMIN_JWT_SECRET (printed on stdout)."""
    if expires_in <= 0:
        raise click.BadParameter("must be positive", param_hint="--expires-in")
    settings = GatewaySettings()
    granted = [Scope(scope) for scope in scopes] or list(Scope)
    try:
        minted = mint_token(settings, subject or cli_actor().name, granted, ttl_seconds=expires_in)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(minted)

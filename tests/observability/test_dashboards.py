"""Every query of every dashboard, run where Grafana would run it after real traffic: PromQL
through the Prometheus server's HTTP API, SQL against the ledger's PostgreSQL schema, whose
totals must equal the ledger's own rows."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlmodel import select

from billing.models import CreditEntry, Plan, Tenant, TenantAccount, TenantPeriod, UsageEvent
from billing.periods import billing_period
from tests.fixtures.factories import usage_rows
from tests.observability.conftest import Stack
from tests.observability.panels import Query, promql, rate_interval, sql

# Wide enough to hold all of this package's traffic.
RATE_WINDOW = "5m"

# Panels that return no data on this stack, and why; nothing else may be empty. The stack's
# node serves PocketSphinx, a CPU engine: CUDA memory gauges exist only on nodes using CUDA.
NO_DATA_ON_A_CPU_NODE = {
    "ASR inference nodes / GPU memory allocated": "asrnode_gpu_memory_allocated_bytes",
    "ASR inference nodes / GPU memory reserved": "asrnode_gpu_memory_reserved_bytes",
}


def test_the_dashboards_have_queries() -> None:
    assert len(promql()) >= 40
    assert len(sql()) == 6


@pytest.mark.parametrize("query", promql(), ids=lambda query: query.id)
def test_every_promql_expression_returns_data(stack: Stack, query: Query) -> None:
    result = stack.query(rate_interval(query.text, RATE_WINDOW))

    if query.id in NO_DATA_ON_A_CPU_NODE:
        # Valid PromQL, and empty for the reason given, not for another.
        assert result == []
        assert stack.query(f"absent({NO_DATA_ON_A_CPU_NODE[query.id]})")
        assert stack.query('asrnode_model_state{model="pocketsphinx-en", state="ready"} == 1')
        return
    assert result, f"{query.id}: no data for {query.text}"
    values = [float(sample["value"][1]) for sample in result]
    assert any(math.isfinite(number) for number in values), (query.id, result)


def test_the_alert_rules_load_and_evaluate_cleanly(stack: Stack) -> None:
    groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()["data"]
    rules = [rule for group in groups["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {
        "AsrNodeDown",
        "AsrNoHealthyNode",
        "AsrGatewayErrorRate",
        "AsrGatewayLatencyHigh",
        "AsrRateLimiterErrors",
        "AsrNodeQueueSaturated",
        "AsrNodeOverloaded",
        "AsrReservationsHeldPastExpiry",
    }
    stack.wait_for_fresh_scrape()
    for rule in rules:
        assert rule["health"] in {"ok", "unknown"}, rule
    # A healthy stack: nothing fires.
    alerts = httpx.get(f"{stack.prometheus_url}/api/v1/alerts", timeout=10).json()["data"]
    assert [alert for alert in alerts["alerts"] if alert["state"] == "firing"] == []


# SQL panels


def grafana_macros(query: str, start: datetime, end: datetime) -> str:
    """What Grafana's PostgreSQL datasource makes of ``$__timeFilter(column)``."""
    start_text = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    end_text = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    while "$__timeFilter(" in query:
        head, _, rest = query.partition("$__timeFilter(")
        column, _, tail = rest.partition(")")
        query = f"{head}{column} BETWEEN '{start_text}' AND '{end_text}'{tail}"
    assert "$__" not in query, query
    return query


def run_sql(stack: Stack, query: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    expanded = grafana_macros(query, now - timedelta(days=1), now + timedelta(minutes=1))
    with stack.database.engine.connect() as connection:
        result = connection.exec_driver_sql(expanded)
        return [dict(row._mapping) for row in result]


def micros(amount: int) -> Decimal:
    return Decimal(amount) / 1_000_000


class Ledger:
    """The ledger's own rows, read through the models (not through the panels' SQL)."""

    def __init__(self, stack: Stack) -> None:
        self.rows = usage_rows(stack.database)
        with stack.database.transaction() as session:
            self.tenants = {tenant.id: tenant for tenant in session.exec(select(Tenant)).all()}
            self.plans = {plan.id: plan for plan in session.exec(select(Plan)).all()}
            self.periods = list(session.exec(select(TenantPeriod)).all())
            self.accounts = list(session.exec(select(TenantAccount)).all())
            self.credits = list(session.exec(select(CreditEntry)).all())

    def name(self, tenant_id: int) -> str:
        return self.tenants[tenant_id].name

    def by_tenant(self, column: Callable[[UsageEvent], int]) -> dict[tuple[str, str], int]:
        totals: dict[tuple[str, str], int] = Counter()
        for row in self.rows:
            totals[(self.name(row.tenant_id), row.currency)] += column(row)
        return dict(totals)


def check_tokens_per_day(rows: list[dict[str, Any]], ledger: Ledger) -> None:
    totals: dict[str, int] = Counter()
    for row in rows:
        assert row["time"].time() == datetime.min.time()  # whole UTC days
        totals[row["metric"]] += int(row["value"])
    expected = {
        tenant: tokens
        for (tenant, _currency), tokens in ledger.by_tenant(lambda r: r.billed_tokens).items()
    }
    assert dict(totals) == expected


def check_revenue_per_day(rows: list[dict[str, Any]], ledger: Ledger) -> None:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        assert isinstance(row["value"], Decimal)  # exact, never a float
        totals[row["metric"]] += row["value"]
    expected = {
        f"{tenant} ({currency})": micros(cost)
        for (tenant, currency), cost in ledger.by_tenant(lambda r: r.cost_micros).items()
    }
    assert dict(totals) == expected


def check_totals(rows: list[dict[str, Any]], ledger: Ledger) -> None:
    expected: dict[str, dict[str, Any]] = {}
    for row in ledger.rows:
        total = expected.setdefault(
            row.currency,
            {"currency": row.currency, "requests": 0, "billed_tokens": 0, "revenue": Decimal(0)},
        )
        total["requests"] += 1
        total["billed_tokens"] += row.billed_tokens
        total["revenue"] += micros(row.cost_micros)
    assert rows == [expected[currency] for currency in sorted(expected)]


def check_top_tenants(rows: list[dict[str, Any]], ledger: Ledger) -> None:
    requests = ledger.by_tenant(lambda _row: 1)
    tokens = ledger.by_tenant(lambda row: row.billed_tokens)
    audio = ledger.by_tenant(lambda row: row.audio_ms)
    cost = ledger.by_tenant(lambda row: row.cost_micros)
    ranked = sorted(cost, key=lambda key: (-cost[key], key[0]))[:10]
    assert [(row["tenant"], row["currency"]) for row in rows] == ranked
    for row in rows:
        key = (row["tenant"], row["currency"])
        assert row["requests"] == requests[key]
        assert row["billed_tokens"] == tokens[key]
        assert row["revenue"] == micros(cost[key])
        assert row["audio_hours"] == round(Decimal(audio[key]) / 3_600_000, 3)


def check_quota_usage(rows: list[dict[str, Any]], ledger: Ledger) -> None:
    period = billing_period(datetime.now(UTC))
    used_this_month = ledger.by_tenant(
        lambda row: row.billed_tokens if billing_period(row.created_at) == period else 0
    )
    with_quota = {
        ledger.name(tenant_period.tenant_id): tenant_period
        for tenant_period in ledger.periods
        if tenant_period.period == period
        and ledger.plans[ledger.tenants[tenant_period.tenant_id].plan_id].monthly_token_quota
        is not None
    }
    assert {row["tenant"] for row in rows} == set(with_quota)
    for row in rows:
        quota = row["monthly_token_quota"]
        tokens = sum(
            used for (tenant, _currency), used in used_this_month.items() if tenant == row["tenant"]
        )
        assert row["tokens_used"] == tokens == with_quota[row["tenant"]].tokens_used
        if quota:
            assert row["percent_used"] == round(Decimal(100 * tokens) / quota, 1)


def check_prepaid_credit(rows: list[dict[str, Any]], ledger: Ledger) -> None:
    prepaid = {tenant.id: tenant for tenant in ledger.tenants.values() if tenant.prepaid}
    assert {row["tenant"] for row in rows} == {tenant.name for tenant in prepaid.values()}
    for row in rows:
        (tenant_id,) = [key for key, tenant in prepaid.items() if tenant.name == row["tenant"]]
        credit = sum(
            entry.amount_micros for entry in ledger.credits if entry.tenant_id == tenant_id
        )
        spent = sum(usage.cost_micros for usage in ledger.rows if usage.tenant_id == tenant_id)
        (account,) = [account for account in ledger.accounts if account.tenant_id == tenant_id]
        assert row["credit"] == micros(credit)
        assert row["spent"] == micros(spent)
        assert row["reserved"] == micros(account.reserved_micros)
        assert row["available"] == micros(credit - spent - account.reserved_micros)


SQL_CHECKS: dict[str, Callable[[list[dict[str, Any]], Ledger], None]] = {
    "ASR billing / Billed tokens per tenant per day": check_tokens_per_day,
    "ASR billing / Revenue per tenant per day": check_revenue_per_day,
    "ASR billing / Totals in range": check_totals,
    "ASR billing / Top tenants by revenue": check_top_tenants,
    "ASR billing / Quota usage this month": check_quota_usage,
    "ASR billing / Prepaid credit left": check_prepaid_credit,
}


def test_every_sql_panel_has_a_check() -> None:
    assert {query.id for query in sql()} == set(SQL_CHECKS)


@pytest.mark.parametrize("query", sql(), ids=lambda query: query.id)
def test_every_sql_panel_agrees_with_the_ledger(stack: Stack, query: Query) -> None:
    rows = run_sql(stack, query.text)
    ledger = Ledger(stack)

    assert ledger.rows, "the traffic billed nothing"
    assert rows, f"{query.id}: no rows"
    SQL_CHECKS[query.id](rows, ledger)


def test_a_time_range_without_traffic_bills_nothing(stack: Stack) -> None:
    (tokens,) = [query for query in sql() if query.panel == "Billed tokens per tenant per day"]
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    expanded = grafana_macros(tokens.text, long_ago, long_ago + timedelta(days=1))
    with stack.database.engine.connect() as connection:
        assert list(connection.exec_driver_sql(expanded)) == []

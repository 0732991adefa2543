"""Usage reports: any grouping of a range adds up to the same integer totals; CSV equals JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from billing.db import Database
from billing.errors import InvalidValue
from billing.reports.schemas import GroupBy
from billing.reports.service import parse_group_by, report_csv, usage_report
from tests.fixtures.factories import bill_at, create_tenant_with_key, usage_rows
from tests.fixtures.processes import asrgw

NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)
DECEMBER = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def ledger(database: Database) -> Database:
    acme = create_tenant_with_key(database, "acme", price_per_1k_tokens_micros=33_333)
    globex = create_tenant_with_key(database, "globex", price_per_1k_tokens_micros=7_001)
    moments = [
        NOVEMBER + timedelta(days=2, hours=23, minutes=59),
        NOVEMBER + timedelta(days=3, hours=0, minutes=1),
        NOVEMBER + timedelta(days=17, hours=12),
        DECEMBER + timedelta(hours=1),  # outside the November range
        NOVEMBER - timedelta(minutes=1),  # outside too
    ]
    for index, when in enumerate(moments):
        bill_at(database, acme, f"a{index}", "the weather is nice" * (index + 1), "m1", when)
        bill_at(database, globex, f"g{index}", "hello world" * (index + 2), f"m{index % 2}", when)
    return database


class TestUsageReport:
    @pytest.mark.parametrize(
        "groups", [["tenant"], ["key"], ["model"], ["day"], ["month"], ["tenant", "day", "model"]]
    )
    def test_every_grouping_sums_to_the_ledger(self, ledger: Database, groups: list[str]) -> None:
        group_by = [GroupBy(group) for group in groups]
        with ledger.transaction() as session:
            rows = usage_report(session, NOVEMBER, DECEMBER, group_by)
        in_range = [row for row in usage_rows(ledger) if NOVEMBER <= row.created_at < DECEMBER]
        assert sum(row.cost_micros for row in rows) == sum(row.cost_micros for row in in_range)
        assert sum(row.requests for row in rows) == len(in_range) == 6
        assert sum(row.billed_tokens for row in rows) == sum(r.billed_tokens for r in in_range)

    def test_days_and_months_are_utc_calendar_buckets(self, ledger: Database) -> None:
        with ledger.transaction() as session:
            days = usage_report(session, NOVEMBER, DECEMBER, [GroupBy.day])
            months = usage_report(
                session,
                NOVEMBER - timedelta(days=1),
                DECEMBER + timedelta(days=1),
                [GroupBy.month],
            )
        assert [row.group["day"] for row in days] == ["2026-11-03", "2026-11-04", "2026-11-18"]
        assert [row.group["month"] for row in months] == ["2026-10", "2026-11", "2026-12"]

    def test_csv_parses_and_equals_the_json_totals(self, ledger: Database) -> None:
        groups = [GroupBy.tenant, GroupBy.model]
        with ledger.transaction() as session:
            rows = usage_report(session, NOVEMBER, DECEMBER, groups)
        parsed = list(csv.DictReader(io.StringIO(report_csv(rows, groups))))
        assert len(parsed) == len(rows)
        assert sum(int(line["cost_micros"]) for line in parsed) == sum(r.cost_micros for r in rows)
        assert [(line["tenant"], line["model"]) for line in parsed] == [
            (row.group["tenant"], row.group["model"]) for row in rows
        ]

    def test_bad_arguments(self, ledger: Database) -> None:
        with pytest.raises(InvalidValue, match="cannot group by"):
            parse_group_by("tenant,weekday")
        with ledger.transaction() as session, pytest.raises(InvalidValue, match="after"):
            usage_report(session, DECEMBER, NOVEMBER, [GroupBy.tenant])


def test_cli_report_csv_and_json_agree(ledger: Database) -> None:
    env = {"BILLING_DATABASE_URL": ledger.url}
    base = ["admin", "report", "--from", "2026-11-01", "--to", "2026-12-01", "--group-by", "tenant"]
    as_csv = asrgw(*base, "--format", "csv", env=env)
    as_json = asrgw(*base, "--format", "json", env=env)
    assert as_csv.returncode == 0, as_csv.stderr
    assert as_json.returncode == 0, as_json.stderr
    csv_total = sum(int(line["cost_micros"]) for line in csv.DictReader(io.StringIO(as_csv.stdout)))
    json_total = sum(row["cost_micros"] for row in json.loads(as_json.stdout))
    assert csv_total == json_total > 0
    bad = asrgw(*base[:-1], "weekday", env=env)
    assert bad.returncode == 2
    assert "cannot group by" in bad.stderr

"""Usage figures the console's pages show, read with the billing reports (ledger sums)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel
from sqlmodel import Session

from billing.reports.schemas import GroupBy, ReportRow
from billing.reports.service import usage_report


class Totals(BaseModel):
    requests: int = 0
    audio_ms: int = 0
    output_tokens: int = 0
    billed_tokens: int = 0
    # Revenue per currency, in micro-units.
    cost_micros: dict[str, int] = {}

    def add(self, row: ReportRow) -> None:
        self.requests += row.requests
        self.audio_ms += row.audio_ms
        self.output_tokens += row.output_tokens
        self.billed_tokens += row.billed_tokens
        self.cost_micros = {
            **self.cost_micros,
            row.currency: self.cost_micros.get(row.currency, 0) + row.cost_micros,
        }


class DailyUsage(BaseModel):
    """Usage per day over a range of days, every day present (zero when idle)."""

    start: date
    end: date  # exclusive
    days: list[tuple[str, Totals]]
    total: Totals

    def points(self, metric: str, currency: str | None = None) -> list[tuple[str, int]]:
        if metric == "cost_micros":
            return [(day, totals.cost_micros.get(currency or "", 0)) for day, totals in self.days]
        return [(day, int(getattr(totals, metric))) for day, totals in self.days]

    @property
    def currencies(self) -> list[str]:
        return sorted(self.total.cost_micros)


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def daily_usage(
    session: Session, start: date, end: date, tenant_name: str | None = None
) -> DailyUsage:
    rows = usage_report(session, midnight(start), midnight(end), [GroupBy.day], tenant_name)
    by_day: dict[str, Totals] = defaultdict(Totals)
    total = Totals()
    for row in rows:
        by_day[row.group["day"]].add(row)
        total.add(row)
    days = []
    day = start
    while day < end:
        days.append((day.isoformat(), by_day.get(day.isoformat(), Totals())))
        day += timedelta(days=1)
    return DailyUsage(start=start, end=end, days=days, total=total)


def usage_by_day_and_model(
    session: Session, start: date, end: date, tenant_name: str
) -> list[ReportRow]:
    return usage_report(
        session, midnight(start), midnight(end), [GroupBy.day, GroupBy.model], tenant_name
    )


def month_start(today: date) -> date:
    return today.replace(day=1)

"""Usage reports over a time range, grouped by tenant, key, model, day or month; JSON or CSV.

Every number is an integer sum of ledger rows, so any grouping of the same range adds up to
the same totals.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

from sqlmodel import Session

from billing.errors import InvalidValue
from billing.money import format_micros
from billing.reports import repository
from billing.reports.schemas import GroupBy, ReportRow
from billing.tenants.service import require_tenant

METRICS = ("requests", "audio_ms", "output_tokens", "billed_tokens", "cost_micros")


def parse_group_by(value: str) -> list[GroupBy]:
    groups: list[GroupBy] = []
    for name in filter(None, (part.strip() for part in value.split(","))):
        try:
            group = GroupBy(name)
        except ValueError:
            allowed = ", ".join(group.value for group in GroupBy)
            raise InvalidValue(f"cannot group by {name!r}; use {allowed}") from None
        if group not in groups:
            groups.append(group)
    if not groups:
        raise InvalidValue("group by at least one of tenant, key, model, day, month")
    return groups


def usage_report(
    session: Session,
    start: datetime,
    end: datetime,
    group_by: list[GroupBy],
    tenant_name: str | None = None,
) -> list[ReportRow]:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidValue("report bounds must be timezone-aware (UTC)")
    if end <= start:
        raise InvalidValue("the report's end must come after its start")
    tenant_id = require_tenant(session, tenant_name).id if tenant_name else None
    rows = repository.grouped_usage(session, start, end, group_by, tenant_id)
    width = len(group_by)
    return [
        ReportRow(
            group={
                group.value: str(value) for group, value in zip(group_by, row[:width], strict=True)
            },
            currency=str(row[width]),
            requests=int(row[width + 1]),
            audio_ms=int(row[width + 2]),
            output_tokens=int(row[width + 3]),
            billed_tokens=int(row[width + 4]),
            cost_micros=int(row[width + 5]),
        )
        for row in rows
    ]


def report_csv(rows: list[ReportRow], group_by: list[GroupBy]) -> str:
    """CSV with a header; costs as integer micros and as an exact decimal."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*(group.value for group in group_by), "currency", *METRICS, "cost"])
    for row in rows:
        writer.writerow(
            [
                *(row.group[group.value] for group in group_by),
                row.currency,
                *(getattr(row, metric) for metric in METRICS),
                format_micros(row.cost_micros, row.currency).split()[0],
            ]
        )
    return buffer.getvalue()

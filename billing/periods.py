"""Billing periods: calendar months in UTC, written ``YYYY-MM``.

Quotas count tokens per period, invoices bill one period, reconciliation checks one period.
"""

from __future__ import annotations

from datetime import UTC, datetime

from billing.errors import InvalidValue

# datetime ends with the year 9999, so the last period whose end it can hold is 9998-12.
LAST_YEAR = 9999
PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


def billing_period(moment: datetime) -> str:
    """The period ``moment`` falls in: ``2026-11``."""
    moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


def period_bounds(period: str) -> tuple[datetime, datetime]:
    """The period's first instant and the next period's first instant, in UTC."""
    try:
        start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidValue(f"{period!r} is not a month like 2026-11") from None
    if start.year >= LAST_YEAR:
        raise InvalidValue(f"periods end with {LAST_YEAR - 1}-12; {period!r} is past them")
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)

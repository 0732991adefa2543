"""Usage report rows."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class GroupBy(StrEnum):
    tenant = "tenant"
    key = "key"
    model = "model"
    day = "day"
    month = "month"


class ReportRow(BaseModel):
    """One group: its keys (in the order asked for), then integer sums over its usage rows."""

    group: dict[str, str]
    currency: str
    requests: int
    audio_ms: int
    output_tokens: int
    billed_tokens: int
    cost_micros: int

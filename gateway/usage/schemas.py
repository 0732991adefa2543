"""``GET /v1/usage`` response."""

from __future__ import annotations

from pydantic import BaseModel


class QuotaView(BaseModel):
    monthly_tokens: int | None
    used_tokens: int
    reserved_tokens: int
    remaining_tokens: int | None


class CreditView(BaseModel):
    granted_micros: int
    spent_micros: int
    reserved_micros: int
    available_micros: int


class KeyUsageView(BaseModel):
    key_prefix: str
    name: str
    requests: int
    audio_seconds: float
    billed_tokens: int
    cost_micros: int


class UsageView(BaseModel):
    object: str = "usage"
    tenant: str
    plan: str
    period: str
    billing: str
    currency: str
    price_per_1k_tokens_micros: int
    token_unit: str
    cost_micros: int
    quota: QuotaView
    credit: CreditView | None  # prepaid tenants only
    keys: list[KeyUsageView]

"""Shapes of usage going into and coming out of the ledger."""

from __future__ import annotations

from pydantic import BaseModel, Field

from billing.keys.schemas import AuthenticatedKey


class BillableTranscription(BaseModel):
    """One finished transcription, about to be written to the ledger."""

    request_id: str = Field(min_length=1, max_length=64)
    caller: AuthenticatedKey
    model: str
    audio_ms: int = Field(ge=0)
    transcript: str
    cached: bool = False


class UsageCharge(BaseModel):
    """What the ledger row says a request cost; the gateway returns exactly this."""

    request_id: str
    output_tokens: int
    billed_tokens: int
    token_unit: str
    price_per_1k_tokens_micros: int
    cost_micros: int
    currency: str
    audio_ms: int


class KeyUsageSummary(BaseModel):
    tenant: str
    key_prefix: str
    key_name: str
    requests: int
    audio_ms: int
    billed_tokens: int
    cost_micros: int
    currency: str

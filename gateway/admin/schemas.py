"""Request bodies of the admin API (responses use the billing package's public schemas)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from billing.keys.schemas import KeyScope
from billing.reconcile.service import Finding
from billing.tokens import TokenUnit


class PlanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    price_per_1k_tokens_micros: int
    token_unit: TokenUnit = TokenUnit.char
    currency: str = "USD"
    monthly_token_quota: int | None = None
    requests_per_minute: int | None = None
    concurrency_limit: int | None = None
    max_tokens_per_audio_second: int = 50
    cache_hit_price_bp: int = 0


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    plan: str | None = None
    prepaid: bool = False


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str
    name: str = Field(default="default", min_length=1, max_length=128)
    expires_in_days: int | None = Field(default=None, gt=0)
    # None: every scope / every model.
    scopes: list[KeyScope] | None = None
    allowed_models: list[str] | None = None


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # How long the old key keeps working; 0 ends it at once.
    grace_seconds: int = Field(default=86_400, ge=0)


class CreditCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_micros: int
    idempotency_key: str = Field(min_length=1, max_length=128)
    kind: str = "topup"
    note: str = Field(default="", max_length=500)


class FindingPublic(BaseModel):
    tenant: str
    check: str
    expected: int
    actual: int
    difference: int
    ok: bool
    detail: str

    @classmethod
    def of(cls, finding: Finding) -> FindingPublic:
        return cls(
            tenant=finding.tenant,
            check=finding.check,
            expected=finding.expected,
            actual=finding.actual,
            difference=finding.actual - finding.expected,
            ok=finding.ok,
            detail=finding.detail,
        )


class ReconcileReport(BaseModel):
    period: str
    ok: bool
    findings: list[FindingPublic]

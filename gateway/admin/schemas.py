"""Request bodies of the admin API (responses use the billing package's public schemas)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from billing import limits
from billing.keys.schemas import KeyScope
from billing.plans.schemas import PlanLimits
from billing.reconcile.service import Finding
from billing.tenants.schemas import TenantUpdate
from billing.tokens import TokenUnit


class PlanCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "pro",
                    "price_per_1k_tokens_micros": 15_000,
                    "token_unit": "char",
                    "currency": "USD",
                    "monthly_token_quota": 5_000_000,
                    "requests_per_minute": 600,
                    "concurrency_limit": 20,
                    "max_tokens_per_audio_second": 50,
                    "cache_hit_price_bp": 0,
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=limits.MAX_PLAN_NAME_LENGTH)
    price_per_1k_tokens_micros: int = Field(ge=0, le=limits.MAX_PRICE_PER_1K_TOKENS_MICROS)
    token_unit: TokenUnit = TokenUnit.char
    currency: str = Field(default="USD", pattern="^[A-Za-z]{3}$", description="ISO 4217 code.")
    monthly_token_quota: int | None = Field(default=None, ge=1, le=limits.MAX_MONTHLY_TOKEN_QUOTA)
    requests_per_minute: int | None = Field(default=None, ge=1, le=limits.MAX_REQUESTS_PER_MINUTE)
    concurrency_limit: int | None = Field(default=None, ge=1, le=limits.MAX_CONCURRENCY_LIMIT)
    max_tokens_per_audio_second: int = Field(
        default=50, ge=1, le=limits.MAX_TOKENS_PER_AUDIO_SECOND
    )
    cache_hit_price_bp: int = Field(default=0, ge=0, le=limits.MAX_CACHE_HIT_PRICE_BP)


class PlanUpdate(PlanLimits):
    """``PATCH /admin/plans/{name}``: the plan terms that may change, bounded as on create
    (null lifts a limit). The service checks the same bounds for the CLI."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"price_per_1k_tokens_micros": 18_000, "requests_per_minute": None}]
        },
    )

    price_per_1k_tokens_micros: int | None = Field(
        default=None, ge=0, le=limits.MAX_PRICE_PER_1K_TOKENS_MICROS
    )
    monthly_token_quota: int | None = Field(default=None, ge=1, le=limits.MAX_MONTHLY_TOKEN_QUOTA)
    requests_per_minute: int | None = Field(default=None, ge=1, le=limits.MAX_REQUESTS_PER_MINUTE)
    concurrency_limit: int | None = Field(default=None, ge=1, le=limits.MAX_CONCURRENCY_LIMIT)
    max_tokens_per_audio_second: int | None = Field(
        default=None, ge=1, le=limits.MAX_TOKENS_PER_AUDIO_SECOND
    )
    cache_hit_price_bp: int | None = Field(default=None, ge=0, le=limits.MAX_CACHE_HIT_PRICE_BP)


class TenantChange(TenantUpdate):
    """``PATCH /admin/tenants/{name}``: another plan, or prepaid ↔ postpaid."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"plan": "pro", "prepaid": True}]}
    )

    plan: str | None = Field(default=None, min_length=1, max_length=limits.MAX_PLAN_NAME_LENGTH)


class TenantCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "acme", "plan": "pro", "prepaid": False}]},
    )

    name: str = Field(min_length=1, max_length=limits.MAX_TENANT_NAME_LENGTH)
    plan: str | None = Field(default=None, min_length=1, max_length=limits.MAX_PLAN_NAME_LENGTH)
    prepaid: bool = False


class KeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "tenant": "acme",
                    "name": "production",
                    "expires_in_days": 365,
                    "scopes": ["audio:transcribe", "usage:read"],
                    "allowed_models": ["whisper-tiny.en"],
                }
            ]
        },
    )

    tenant: str = Field(min_length=1, max_length=limits.MAX_TENANT_NAME_LENGTH)
    name: str = Field(default="default", min_length=1, max_length=limits.MAX_KEY_NAME_LENGTH)
    expires_in_days: int | None = Field(default=None, gt=0, le=limits.MAX_KEY_LIFETIME_DAYS)
    # None: every scope / every model.
    scopes: list[KeyScope] | None = Field(default=None, min_length=1, max_length=len(KeyScope))
    allowed_models: (
        list[Annotated[str, Field(min_length=1, max_length=limits.MAX_MODEL_NAME_LENGTH)]] | None
    ) = Field(default=None, min_length=1, max_length=limits.MAX_ALLOWED_MODELS)


class KeyRotate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"grace_seconds": 3600}]}
    )

    # How long the old key keeps working; 0 ends it at once.
    grace_seconds: int = Field(default=86_400, ge=0, le=limits.MAX_ROTATION_GRACE_SECONDS)


class CreditCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "amount_micros": 10_000_000,
                    "idempotency_key": "invoice-2026-11-acme",
                    "kind": "topup",
                    "note": "bank transfer 2026-11-03",
                }
            ]
        },
    )

    amount_micros: int = Field(ge=-limits.MAX_CREDIT_MICROS, le=limits.MAX_CREDIT_MICROS)
    idempotency_key: str = Field(min_length=1, max_length=limits.MAX_IDEMPOTENCY_KEY_LENGTH)
    kind: Literal["topup", "adjustment"] = "topup"
    note: str = Field(default="", max_length=limits.MAX_NOTE_LENGTH)


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

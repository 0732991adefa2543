"""Plans as the admin API shows and changes them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from billing.models import Plan
from billing.tokens import TokenUnit


class PlanLimits(BaseModel):
    """The terms of a plan that may change after it is created. Each new usage row copies the
    price and unit it was billed at, so a change never rewrites a past request's cost."""

    model_config = ConfigDict(extra="forbid")

    price_per_1k_tokens_micros: int | None = None
    token_unit: TokenUnit | None = None
    monthly_token_quota: int | None = None
    requests_per_minute: int | None = None
    concurrency_limit: int | None = None
    max_tokens_per_audio_second: int | None = None
    cache_hit_price_bp: int | None = None


class PlanPublic(BaseModel):
    id: int
    name: str
    currency: str
    price_per_1k_tokens_micros: int
    token_unit: TokenUnit
    monthly_token_quota: int | None
    requests_per_minute: int | None
    concurrency_limit: int | None
    max_tokens_per_audio_second: int
    cache_hit_price_bp: int
    created_at: datetime

    @classmethod
    def of(cls, plan: Plan) -> PlanPublic:
        assert plan.id is not None
        return cls(
            id=plan.id,
            name=plan.name,
            currency=plan.currency,
            price_per_1k_tokens_micros=plan.price_per_1k_tokens_micros,
            token_unit=TokenUnit(plan.token_unit),
            monthly_token_quota=plan.monthly_token_quota,
            requests_per_minute=plan.requests_per_minute,
            concurrency_limit=plan.concurrency_limit,
            max_tokens_per_audio_second=plan.max_tokens_per_audio_second,
            cache_hit_price_bp=plan.cache_hit_price_bp,
            created_at=plan.created_at,
        )

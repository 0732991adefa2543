"""Plans: prices in integer micro-units per 1,000 output tokens."""

from __future__ import annotations

from sqlmodel import Session

from billing.errors import AlreadyExists, InvalidValue, NotFound
from billing.models import Plan
from billing.plans import repository
from billing.tokens import TokenUnit

DEFAULT_PLAN_NAME = "standard"
# 0.02 of the currency per 1,000 characters of transcript.
DEFAULT_PRICE_PER_1K_TOKENS_MICROS = 20_000


def create_plan(
    session: Session,
    name: str,
    *,
    price_per_1k_tokens_micros: int,
    token_unit: TokenUnit | str = TokenUnit.char,
    currency: str = "USD",
    monthly_token_quota: int | None = None,
    requests_per_minute: int | None = None,
    concurrency_limit: int | None = None,
    max_tokens_per_audio_second: int = 50,
    cache_hit_price_bp: int = 0,
) -> Plan:
    if price_per_1k_tokens_micros < 0:
        raise InvalidValue("a price is never negative")
    for label, limit in (
        ("monthly token quota", monthly_token_quota),
        ("requests per minute", requests_per_minute),
        ("concurrency limit", concurrency_limit),
    ):
        if limit is not None and limit <= 0:
            raise InvalidValue(f"the {label} must be positive (or unset for no limit)")
    if max_tokens_per_audio_second <= 0:
        raise InvalidValue("max tokens per audio second must be positive")
    if not 0 <= cache_hit_price_bp <= 10_000:
        raise InvalidValue("the cache-hit price is 0 to 10000 basis points of the price")
    if len(currency) != 3 or not currency.isalpha():
        raise InvalidValue(f"currency must be a 3-letter ISO 4217 code, not {currency!r}")
    try:
        unit = TokenUnit(token_unit)
    except ValueError:
        raise InvalidValue(f"token unit must be one of {[u.value for u in TokenUnit]}") from None
    if repository.get_plan_by_name(session, name) is not None:
        raise AlreadyExists(f"plan {name!r} exists already")
    plan = Plan(
        name=name,
        price_per_1k_tokens_micros=price_per_1k_tokens_micros,
        token_unit=unit.value,
        currency=currency.upper(),
        monthly_token_quota=monthly_token_quota,
        requests_per_minute=requests_per_minute,
        concurrency_limit=concurrency_limit,
        max_tokens_per_audio_second=max_tokens_per_audio_second,
        cache_hit_price_bp=cache_hit_price_bp,
    )
    return repository.add_plan(session, plan)


def require_plan(session: Session, name: str) -> Plan:
    plan = repository.get_plan_by_name(session, name)
    if plan is None:
        raise NotFound(f"no plan named {name!r}")
    return plan


def ensure_default_plan(session: Session) -> Plan:
    """The plan new tenants get when none is named; created on first use."""
    plan = repository.get_plan_by_name(session, DEFAULT_PLAN_NAME)
    if plan is not None:
        return plan
    return create_plan(
        session, DEFAULT_PLAN_NAME, price_per_1k_tokens_micros=DEFAULT_PRICE_PER_1K_TOKENS_MICROS
    )

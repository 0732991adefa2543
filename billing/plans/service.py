"""Plans: prices in integer micro-units per 1,000 output tokens."""

from __future__ import annotations

from sqlmodel import Session

from billing import limits
from billing.audit import service as audit
from billing.audit.schemas import Actor
from billing.errors import AlreadyExists, InvalidValue, NotFound
from billing.models import Plan
from billing.plans import repository
from billing.plans.schemas import PlanLimits, PlanPublic
from billing.tokens import TokenUnit

DEFAULT_PLAN_NAME = "standard"
# 0.02 of the currency per 1,000 characters of transcript.
DEFAULT_PRICE_PER_1K_TOKENS_MICROS = 20_000
# Fields a plan update may leave unset to mean "no limit".
UNLIMITED_WHEN_NONE = ("monthly_token_quota", "requests_per_minute", "concurrency_limit")


def _check_terms(plan: Plan) -> None:
    if plan.price_per_1k_tokens_micros < 0:
        raise InvalidValue("a price is never negative")
    limits.check_range(
        "the price per 1,000 tokens",
        plan.price_per_1k_tokens_micros,
        0,
        limits.MAX_PRICE_PER_1K_TOKENS_MICROS,
    )
    for label, limit, highest in (
        ("monthly token quota", plan.monthly_token_quota, limits.MAX_MONTHLY_TOKEN_QUOTA),
        ("requests per minute", plan.requests_per_minute, limits.MAX_REQUESTS_PER_MINUTE),
        ("concurrency limit", plan.concurrency_limit, limits.MAX_CONCURRENCY_LIMIT),
    ):
        if limit is not None and limit <= 0:
            raise InvalidValue(f"the {label} must be positive (or unset for no limit)")
        if limit is not None:
            limits.check_range(f"the {label}", limit, 1, highest)
    if plan.max_tokens_per_audio_second <= 0:
        raise InvalidValue("max tokens per audio second must be positive")
    limits.check_range(
        "max tokens per audio second",
        plan.max_tokens_per_audio_second,
        1,
        limits.MAX_TOKENS_PER_AUDIO_SECOND,
    )
    if not 0 <= plan.cache_hit_price_bp <= 10_000:
        raise InvalidValue("the cache-hit price is 0 to 10000 basis points of the price")
    if len(plan.currency) != 3 or not plan.currency.isalpha():
        raise InvalidValue(f"currency must be a 3-letter ISO 4217 code, not {plan.currency!r}")
    try:
        TokenUnit(plan.token_unit)
    except ValueError:
        raise InvalidValue(f"token unit must be one of {[u.value for u in TokenUnit]}") from None


def create_plan(
    session: Session,
    name: str,
    *,
    actor: Actor,
    price_per_1k_tokens_micros: int,
    token_unit: TokenUnit | str = TokenUnit.char,
    currency: str = "USD",
    monthly_token_quota: int | None = None,
    requests_per_minute: int | None = None,
    concurrency_limit: int | None = None,
    max_tokens_per_audio_second: int = 50,
    cache_hit_price_bp: int = 0,
) -> Plan:
    name = name.strip()
    if not name:
        raise InvalidValue("a plan needs a name")
    limits.check_length("a plan's name", name, limits.MAX_PLAN_NAME_LENGTH)
    plan = Plan(
        name=name,
        price_per_1k_tokens_micros=price_per_1k_tokens_micros,
        token_unit=str(token_unit),
        currency=currency.upper(),
        monthly_token_quota=monthly_token_quota,
        requests_per_minute=requests_per_minute,
        concurrency_limit=concurrency_limit,
        max_tokens_per_audio_second=max_tokens_per_audio_second,
        cache_hit_price_bp=cache_hit_price_bp,
    )
    _check_terms(plan)
    if repository.get_plan_by_name(session, name) is not None:
        raise AlreadyExists(f"plan {name!r} exists already")
    repository.add_plan(session, plan)
    audit.record(session, actor, "plan.create", "plan", name, after=PlanPublic.of(plan))
    return plan


def update_plan(session: Session, name: str, changes: PlanLimits, *, actor: Actor) -> Plan:
    """Change the fields set in ``changes`` (an explicit null lifts a limit). Applies to
    requests reserved from now on; the currency never changes, since invoices add rows up."""
    plan = require_plan(session, name)
    before = PlanPublic.of(plan)
    for field in changes.model_fields_set:
        value = getattr(changes, field)
        if value is None and field not in UNLIMITED_WHEN_NONE:
            raise InvalidValue(f"{field} cannot be null")
        setattr(plan, field, str(value) if field == "token_unit" else value)
    _check_terms(plan)
    after = PlanPublic.of(plan)
    if after != before:
        repository.add_plan(session, plan)
        audit.record(session, actor, "plan.update", "plan", name, before=before, after=after)
    return plan


def require_plan(session: Session, name: str) -> Plan:
    plan = repository.get_plan_by_name(session, name)
    if plan is None:
        raise NotFound(f"no plan named {name!r}")
    return plan


def ensure_default_plan(session: Session, *, actor: Actor) -> Plan:
    """The plan new tenants get when none is named; created on first use."""
    plan = repository.get_plan_by_name(session, DEFAULT_PLAN_NAME)
    if plan is not None:
        return plan
    return create_plan(
        session,
        DEFAULT_PLAN_NAME,
        actor=actor,
        price_per_1k_tokens_micros=DEFAULT_PRICE_PER_1K_TOKENS_MICROS,
    )

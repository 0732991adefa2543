"""A customer's view of their own month: spend, quota and credit."""

from __future__ import annotations

from billing.accounts import repository as accounts
from billing.db import Database
from billing.keys.schemas import AuthenticatedKey
from billing.models.types import utcnow
from billing.periods import billing_period, period_bounds
from billing.usage.service import usage_per_key
from gateway.usage.schemas import CreditView, KeyUsageView, QuotaView, UsageView


def usage_view(database: Database, caller: AuthenticatedKey) -> UsageView:
    now = utcnow()
    period = billing_period(now)
    plan = caller.plan
    with database.transaction() as session:
        totals = accounts.get_account(session, caller.tenant_id)
        counters = accounts.get_period(session, caller.tenant_id, period)
        keys = usage_per_key(session, caller.tenant_name, since=period_bounds(period)[0])
    used = counters.tokens_used if counters else 0
    reserved = counters.tokens_reserved if counters else 0
    quota = plan.monthly_token_quota
    return UsageView(
        tenant=caller.tenant_name,
        plan=plan.name,
        period=period,
        billing="prepaid" if caller.prepaid else "postpaid",
        currency=plan.currency,
        price_per_1k_tokens_micros=plan.price_per_1k_tokens_micros,
        token_unit=plan.token_unit.value,
        cost_micros=sum(key.cost_micros for key in keys),
        quota=QuotaView(
            monthly_tokens=quota,
            used_tokens=used,
            reserved_tokens=reserved,
            remaining_tokens=None if quota is None else max(quota - used - reserved, 0),
        ),
        credit=CreditView(
            granted_micros=totals.credit_micros,
            spent_micros=totals.spent_micros,
            reserved_micros=totals.reserved_micros,
            available_micros=totals.available_micros,
        )
        if caller.prepaid and totals is not None
        else None,
        keys=[
            KeyUsageView(
                key_prefix=key.key_prefix,
                name=key.key_name,
                requests=key.requests,
                audio_seconds=key.audio_ms / 1000,
                billed_tokens=key.billed_tokens,
                cost_micros=key.cost_micros,
            )
            for key in keys
        ],
    )

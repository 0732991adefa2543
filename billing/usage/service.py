"""The usage ledger: one insert-only row per billed request."""

from __future__ import annotations

from sqlmodel import Session

from billing.models import UsageEvent
from billing.money import cost_micros
from billing.tenants.service import require_tenant
from billing.tokens import count_tokens
from billing.usage import repository
from billing.usage.schemas import BillableTranscription, KeyUsageSummary, UsageCharge


def charge_for(event: UsageEvent) -> UsageCharge:
    return UsageCharge(
        request_id=event.request_id,
        output_tokens=event.output_tokens,
        token_unit=event.token_unit,
        price_per_1k_tokens_micros=event.price_per_1k_tokens_micros,
        cost_micros=event.cost_micros,
        currency=event.currency,
        audio_ms=event.audio_ms,
    )


def record_transcription(session: Session, billable: BillableTranscription) -> UsageCharge:
    """Count the transcript's tokens on the caller's plan and write the ledger row.

    The request id is unique in the table: a second write for the same request fails instead of
    billing twice.
    """
    plan = billable.caller.plan
    output_tokens = count_tokens(billable.transcript, plan.token_unit)
    event = UsageEvent(
        request_id=billable.request_id,
        tenant_id=billable.caller.tenant_id,
        api_key_id=billable.caller.key_id,
        model=billable.model,
        audio_ms=billable.audio_ms,
        output_tokens=output_tokens,
        token_unit=plan.token_unit.value,
        price_per_1k_tokens_micros=plan.price_per_1k_tokens_micros,
        currency=plan.currency,
        cost_micros=cost_micros(output_tokens, plan.price_per_1k_tokens_micros),
        cached=billable.cached,
    )
    return charge_for(repository.insert_usage_event(session, event))


def usage_per_key(session: Session, tenant_name: str | None = None) -> list[KeyUsageSummary]:
    tenant_id = require_tenant(session, tenant_name).id if tenant_name is not None else None
    return [
        KeyUsageSummary(
            tenant=tenant,
            key_prefix=prefix,
            key_name=name,
            requests=int(requests),
            audio_ms=int(audio_ms),
            output_tokens=int(tokens),
            cost_micros=int(cost),
            currency=currency or "",
        )
        for tenant, prefix, name, requests, audio_ms, tokens, cost, currency in (
            repository.usage_by_key(session, tenant_id)
        )
    ]

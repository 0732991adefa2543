"""The usage ledger: one insert-only row per billed request (written by
``billing.reservations.service.settle``)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from billing.models import UsageEvent
from billing.tenants.service import require_tenant
from billing.usage import repository
from billing.usage.schemas import KeyUsageSummary, UsageCharge


def charge_for(event: UsageEvent) -> UsageCharge:
    return UsageCharge(
        request_id=event.request_id,
        output_tokens=event.output_tokens,
        billed_tokens=event.billed_tokens,
        token_unit=event.token_unit,
        price_per_1k_tokens_micros=event.price_per_1k_tokens_micros,
        cost_micros=event.cost_micros,
        currency=event.currency,
        audio_ms=event.audio_ms,
    )


def usage_per_key(
    session: Session, tenant_name: str | None = None, since: datetime | None = None
) -> list[KeyUsageSummary]:
    """Requests, audio, billed tokens and cost per API key (since ``since`` when given)."""
    tenant_id = require_tenant(session, tenant_name).id if tenant_name is not None else None
    return [
        KeyUsageSummary(
            tenant=tenant,
            key_prefix=prefix,
            key_name=name,
            requests=int(requests),
            audio_ms=int(audio_ms),
            billed_tokens=int(tokens),
            cost_micros=int(cost),
            currency=currency or "",
        )
        for tenant, prefix, name, requests, audio_ms, tokens, cost, currency in (
            repository.usage_by_key(session, tenant_id, since)
        )
    ]

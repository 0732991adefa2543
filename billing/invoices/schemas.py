"""Invoices as the admin API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from billing.models import Invoice, InvoiceLine


class InvoiceLinePublic(BaseModel):
    kind: str
    model: str
    api_key_prefix: str
    requests: int
    billed_tokens: int
    amount_micros: int


class InvoicePublic(BaseModel):
    tenant: str
    period: str
    state: str
    currency: str
    total_micros: int
    created_at: datetime
    finalized_at: datetime | None
    lines: list[InvoiceLinePublic]

    @classmethod
    def of(cls, invoice: Invoice, tenant_name: str, lines: list[InvoiceLine]) -> InvoicePublic:
        return cls(
            tenant=tenant_name,
            period=invoice.period,
            state=invoice.state,
            currency=invoice.currency,
            total_micros=invoice.total_micros,
            created_at=invoice.created_at,
            finalized_at=invoice.finalized_at,
            lines=[
                InvoiceLinePublic(
                    kind=line.kind,
                    model=line.model,
                    api_key_prefix=line.api_key_prefix,
                    requests=line.requests,
                    billed_tokens=line.billed_tokens,
                    amount_micros=line.amount_micros,
                )
                for line in lines
            ],
        )


class InvoiceSummary(BaseModel):
    """An invoice without its lines, for audit entries and listings."""

    tenant: str
    period: str
    state: str
    currency: str
    total_micros: int

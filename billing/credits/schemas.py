"""Credit entries as the admin API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from billing.models import CreditEntry


class CreditEntryPublic(BaseModel):
    id: int
    tenant: str
    kind: str
    amount_micros: int
    idempotency_key: str
    note: str
    created_at: datetime

    @classmethod
    def of(cls, entry: CreditEntry, tenant_name: str) -> CreditEntryPublic:
        assert entry.id is not None
        return cls(
            id=entry.id,
            tenant=tenant_name,
            kind=entry.kind,
            amount_micros=entry.amount_micros,
            idempotency_key=entry.idempotency_key,
            note=entry.note,
            created_at=entry.created_at,
        )

"""Prepaid credit: insert-only entries, idempotent on a client-supplied key."""

from __future__ import annotations

from sqlmodel import Session, col, select

from billing import limits
from billing.accounts.repository import lock_account
from billing.audit import service as audit
from billing.audit.schemas import Actor
from billing.credits.schemas import CreditEntryPublic
from billing.errors import Conflict, InvalidValue
from billing.models import CreditEntry
from billing.models.types import utcnow
from billing.tenants.service import require_tenant

KINDS = ("topup", "adjustment")


def add_credit(
    session: Session,
    tenant_name: str,
    amount_micros: int,
    *,
    idempotency_key: str,
    actor: Actor,
    kind: str = "topup",
    note: str = "",
) -> tuple[CreditEntry, bool]:
    """Apply a credit entry once. Returns the entry and whether this call created it; the same
    key again returns the first entry unchanged (a different amount or kind is a conflict)."""
    if kind not in KINDS:
        raise InvalidValue(f"credit kind must be one of {KINDS}")
    if kind == "topup" and amount_micros <= 0:
        raise InvalidValue("a top-up must be positive; use an adjustment to take credit away")
    limits.check_range(
        "a credit entry's amount",
        amount_micros,
        -limits.MAX_CREDIT_MICROS,
        limits.MAX_CREDIT_MICROS,
    )
    if not idempotency_key.strip():
        raise InvalidValue("an idempotency key is required")
    limits.check_length("the idempotency key", idempotency_key, limits.MAX_IDEMPOTENCY_KEY_LENGTH)
    limits.check_length("the note", note, limits.MAX_NOTE_LENGTH)
    tenant = require_tenant(session, tenant_name)
    assert tenant.id is not None
    account = lock_account(session, tenant.id)
    existing = session.exec(
        select(CreditEntry).where(
            CreditEntry.tenant_id == tenant.id, CreditEntry.idempotency_key == idempotency_key
        )
    ).first()
    if existing is not None:
        if (existing.amount_micros, existing.kind) != (amount_micros, kind):
            raise Conflict(
                f"idempotency key {idempotency_key!r} was used for a {existing.kind} of "
                f"{existing.amount_micros} micros"
            )
        return existing, False
    entry = CreditEntry(
        tenant_id=tenant.id,
        kind=kind,
        amount_micros=amount_micros,
        idempotency_key=idempotency_key,
        note=note,
    )
    session.add(entry)
    account.credit_micros += amount_micros
    account.updated_at = utcnow()
    session.add(account)
    session.flush()
    audit.record(
        session,
        actor,
        "credit.add",
        "tenant",
        tenant.name,
        after=CreditEntryPublic.of(entry, tenant.name),
    )
    return entry, True


def list_credit_entries(session: Session, tenant_name: str) -> list[CreditEntryPublic]:
    tenant = require_tenant(session, tenant_name)
    entries = session.exec(
        select(CreditEntry).where(CreditEntry.tenant_id == tenant.id).order_by(col(CreditEntry.id))
    ).all()
    return [CreditEntryPublic.of(entry, tenant.name) for entry in entries]

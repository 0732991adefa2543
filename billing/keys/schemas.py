"""What authenticating a key yields: who is calling and how they are billed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from billing.tokens import TokenUnit


class KeyScope(StrEnum):
    """What a customer key may do; a key made without scopes may do all of it."""

    transcribe = "audio:transcribe"
    usage_read = "usage:read"
    models_read = "models:read"


class PlanTerms(BaseModel):
    """The plan's price terms at the moment of the request; copied onto the ledger row."""

    name: str
    price_per_1k_tokens_micros: int
    token_unit: TokenUnit
    currency: str
    max_tokens_per_audio_second: int = 50
    monthly_token_quota: int | None = None
    requests_per_minute: int | None = None
    concurrency_limit: int | None = None
    cache_hit_price_bp: int = 0


class AuthenticatedKey(BaseModel):
    key_id: int
    key_prefix: str
    tenant_id: int
    tenant_name: str
    prepaid: bool = False
    plan: PlanTerms
    scopes: frozenset[KeyScope] = frozenset(KeyScope)
    # None: every model.
    allowed_models: frozenset[str] | None = None
    expires_at: datetime | None = None

    def allows_model(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


class ApiKeyPublic(BaseModel):
    """A key as listed: never its secret."""

    id: int
    tenant: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    scopes: list[KeyScope]
    allowed_models: list[str] | None
    rotated_from_id: int | None = None


class CreatedApiKey(BaseModel):
    """A new key. ``secret`` is shown this once and never stored."""

    key: ApiKeyPublic
    secret: str


class KeyRotation(BaseModel):
    """A rotation: the old key keeps working until ``old.expires_at`` (the grace period)."""

    old: ApiKeyPublic
    new: CreatedApiKey


class KeyRotationRecord(BaseModel):
    """What the audit log keeps of a rotation (no secret)."""

    old: ApiKeyPublic
    new: ApiKeyPublic

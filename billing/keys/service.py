"""Customer API keys: created once, stored as a hash, found by prefix.

A key reads ``sk-asrgw-<prefix>_<secret>``: the 12 hex characters of the prefix find the row
without a scan; the whole key's SHA-256 is compared in constant time. Keys carry 256 bits of
randomness, so a fast hash is the right one (there is nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlmodel import Session

from billing.audit import service as audit
from billing.audit.schemas import Actor
from billing.errors import InvalidApiKey, InvalidValue, NotFound
from billing.keys import repository
from billing.keys.schemas import ApiKeyPublic, AuthenticatedKey, CreatedApiKey, PlanTerms
from billing.models import ApiKey, Tenant
from billing.models.types import utcnow
from billing.tenants.service import require_tenant
from billing.tokens import TokenUnit

KEY_SCHEME = "sk-asrgw-"
PREFIX_HEX_CHARS = 12


def hash_secret(presented_key: str) -> str:
    return hashlib.sha256(presented_key.encode()).hexdigest()


def split_key(presented_key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    if not presented_key.startswith(KEY_SCHEME):
        return None
    prefix, separator, secret = presented_key[len(KEY_SCHEME) :].partition("_")
    if not separator or not secret or len(prefix) != PREFIX_HEX_CHARS:
        return None
    if any(character not in "0123456789abcdef" for character in prefix):
        return None
    return prefix


def _public(key: ApiKey, tenant: Tenant) -> ApiKeyPublic:
    assert key.id is not None
    return ApiKeyPublic(
        id=key.id,
        tenant=tenant.name,
        name=key.name,
        prefix=key.prefix,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
    )


def create_api_key(
    session: Session,
    tenant_name: str,
    *,
    actor: Actor,
    name: str = "default",
    expires_in: timedelta | None = None,
) -> CreatedApiKey:
    tenant = require_tenant(session, tenant_name)
    assert tenant.id is not None
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidValue("a key's lifetime must be positive")
    prefix = secrets.token_hex(PREFIX_HEX_CHARS // 2)
    secret = f"{KEY_SCHEME}{prefix}_{secrets.token_urlsafe(32)}"
    key = repository.add_key(
        session,
        ApiKey(
            tenant_id=tenant.id,
            name=name,
            prefix=prefix,
            secret_hash=hash_secret(secret),
            expires_at=utcnow() + expires_in if expires_in is not None else None,
        ),
    )
    public = _public(key, tenant)
    audit.record(session, actor, "key.create", "api_key", public.prefix, after=public)
    return CreatedApiKey(key=public, secret=secret)


def authenticate(
    session: Session, presented_key: str, *, now: datetime | None = None
) -> AuthenticatedKey:
    """Who the key belongs to; ``InvalidApiKey`` when it is unknown, revoked or expired."""
    prefix = split_key(presented_key)
    if prefix is None:
        raise InvalidApiKey("Incorrect API key provided.")
    found = repository.get_key_with_tenant_and_plan(session, prefix)
    # Hash even when nothing was found, so timing does not tell which prefixes exist.
    presented_hash = hash_secret(presented_key)
    stored_hash = found[0].secret_hash if found is not None else "0" * 64
    if found is None or not hmac.compare_digest(presented_hash, stored_hash):
        raise InvalidApiKey("Incorrect API key provided.")
    key, tenant, plan = found
    now = now or utcnow()
    if key.revoked_at is not None:
        raise InvalidApiKey("This API key has been revoked.")
    if key.expires_at is not None and key.expires_at <= now:
        raise InvalidApiKey("This API key has expired.")
    assert key.id is not None
    assert tenant.id is not None
    return AuthenticatedKey(
        key_id=key.id,
        key_prefix=key.prefix,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        prepaid=tenant.prepaid,
        plan=PlanTerms(
            name=plan.name,
            price_per_1k_tokens_micros=plan.price_per_1k_tokens_micros,
            token_unit=TokenUnit(plan.token_unit),
            currency=plan.currency,
            max_tokens_per_audio_second=plan.max_tokens_per_audio_second,
            monthly_token_quota=plan.monthly_token_quota,
            requests_per_minute=plan.requests_per_minute,
            concurrency_limit=plan.concurrency_limit,
            cache_hit_price_bp=plan.cache_hit_price_bp,
        ),
    )


def revoke_api_key(session: Session, prefix: str, *, actor: Actor) -> ApiKeyPublic:
    """Revoke the key with this prefix (the key itself or its ``sk-asrgw-…`` form)."""
    prefix = split_key(prefix) or prefix
    found = repository.get_key_with_tenant_and_plan(session, prefix)
    if found is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    key, tenant, _plan = found
    if key.revoked_at is None:
        before = _public(key, tenant)
        key.revoked_at = utcnow()
        repository.add_key(session, key)
        audit.record(
            session,
            actor,
            "key.revoke",
            "api_key",
            key.prefix,
            before=before,
            after=_public(key, tenant),
        )
    return _public(key, tenant)


def list_api_keys(session: Session, tenant_name: str | None = None) -> list[ApiKeyPublic]:
    tenant_id = None
    if tenant_name is not None:
        tenant_id = require_tenant(session, tenant_name).id
    return [_public(key, tenant) for key, tenant in repository.list_keys(session, tenant_id)]

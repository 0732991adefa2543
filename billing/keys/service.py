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

from billing import limits
from billing.audit import service as audit
from billing.audit.schemas import Actor
from billing.errors import InvalidApiKey, InvalidValue, NotFound
from billing.keys import repository
from billing.keys.schemas import (
    ApiKeyPublic,
    AuthenticatedKey,
    CreatedApiKey,
    KeyRotation,
    KeyRotationRecord,
    KeyScope,
    PlanTerms,
)
from billing.models import ApiKey, Plan, Tenant
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
        scopes=sorted(key_scopes(key)),
        allowed_models=sorted(models) if (models := key_models(key)) is not None else None,
        rotated_from_id=key.rotated_from_id,
    )


def key_scopes(key: ApiKey) -> frozenset[KeyScope]:
    if key.scopes is None:
        return frozenset(KeyScope)
    return frozenset(KeyScope(scope) for scope in key.scopes.split())


def key_models(key: ApiKey) -> frozenset[str] | None:
    if key.allowed_models is None:
        return None
    return frozenset(model for model in key.allowed_models.split(",") if model)


def _scopes_column(scopes: list[KeyScope] | None) -> str | None:
    if scopes is None:
        return None
    if not scopes:
        raise InvalidValue("a key needs at least one scope (or none given, for all of them)")
    return " ".join(sorted({KeyScope(scope).value for scope in scopes}))


def _models_column(models: list[str] | None) -> str | None:
    if models is None:
        return None
    cleaned = sorted({model.strip() for model in models if model.strip()})
    if not cleaned:
        raise InvalidValue("allowed models, when given, must name at least one model")
    if len(cleaned) > limits.MAX_ALLOWED_MODELS:
        raise InvalidValue(f"a key names at most {limits.MAX_ALLOWED_MODELS} models")
    for model in cleaned:
        limits.check_length("a model name", model, limits.MAX_MODEL_NAME_LENGTH)
    if any("," in model for model in cleaned):
        raise InvalidValue("a model name cannot contain a comma")
    return ",".join(cleaned)


def create_api_key(
    session: Session,
    tenant_name: str,
    *,
    actor: Actor,
    name: str = "default",
    expires_in: timedelta | None = None,
    scopes: list[KeyScope] | None = None,
    allowed_models: list[str] | None = None,
) -> CreatedApiKey:
    name = name.strip()
    if not name:
        raise InvalidValue("a key needs a name")
    limits.check_length("a key's name", name, limits.MAX_KEY_NAME_LENGTH)
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidValue("a key's lifetime must be positive")
    if expires_in is not None and expires_in > timedelta(days=limits.MAX_KEY_LIFETIME_DAYS):
        raise InvalidValue(f"a key lives at most {limits.MAX_KEY_LIFETIME_DAYS:,} days")
    tenant = require_tenant(session, tenant_name)
    created = _new_key(
        session,
        tenant,
        name=name,
        expires_at=utcnow() + expires_in if expires_in is not None else None,
        scopes=_scopes_column(scopes),
        allowed_models=_models_column(allowed_models),
    )
    audit.record(session, actor, "key.create", "api_key", created.key.prefix, after=created.key)
    return created


def _new_key(
    session: Session,
    tenant: Tenant,
    *,
    name: str,
    expires_at: datetime | None,
    scopes: str | None,
    allowed_models: str | None,
    rotated_from_id: int | None = None,
) -> CreatedApiKey:
    assert tenant.id is not None
    prefix = secrets.token_hex(PREFIX_HEX_CHARS // 2)
    secret = f"{KEY_SCHEME}{prefix}_{secrets.token_urlsafe(32)}"
    key = repository.add_key(
        session,
        ApiKey(
            tenant_id=tenant.id,
            name=name,
            prefix=prefix,
            secret_hash=hash_secret(secret),
            expires_at=expires_at,
            scopes=scopes,
            allowed_models=allowed_models,
            rotated_from_id=rotated_from_id,
        ),
    )
    return CreatedApiKey(key=_public(key, tenant), secret=secret)


def rotate_api_key(session: Session, prefix: str, *, grace: timedelta, actor: Actor) -> KeyRotation:
    """A new key with the old one's name, scopes, models and remaining lifetime; the old key
    keeps working for ``grace`` (zero ends it now), so clients can switch without downtime."""
    if grace < timedelta(0):
        raise InvalidValue("the grace period cannot be negative")
    if grace > timedelta(seconds=limits.MAX_ROTATION_GRACE_SECONDS):
        raise InvalidValue(
            f"the grace period is at most {limits.MAX_ROTATION_GRACE_SECONDS:,} seconds (90 days)"
        )
    prefix = split_key(prefix) or prefix
    found = repository.get_key_with_tenant_and_plan(session, prefix)
    if found is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    old, tenant, _plan = found
    now = utcnow()
    if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
        raise InvalidValue(f"key {prefix} is revoked or expired; create a new key instead")
    before = _public(old, tenant)
    created = _new_key(
        session,
        tenant,
        name=old.name,
        expires_at=old.expires_at,
        scopes=old.scopes,
        allowed_models=old.allowed_models,
        rotated_from_id=old.id,
    )
    grace_ends = now + grace
    if old.expires_at is None or grace_ends < old.expires_at:
        old.expires_at = grace_ends
        repository.add_key(session, old)
    audit.record(
        session,
        actor,
        "key.rotate",
        "api_key",
        old.prefix,
        before=before,
        after=KeyRotationRecord(old=_public(old, tenant), new=created.key),
    )
    return KeyRotation(old=_public(old, tenant), new=created)


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
    return _usable_caller(key, tenant, plan, now or utcnow())


def caller_for_tenant_key(
    session: Session, tenant_id: int, prefix: str, *, now: datetime | None = None
) -> AuthenticatedKey:
    """The caller a tenant's own key makes, found by its prefix without the secret (the customer
    portal bills its playground against a key the signed-in customer picks). ``NotFound`` for a
    prefix of another tenant, exactly as for one that does not exist."""
    found = repository.get_key_with_tenant_and_plan(session, prefix)
    if found is None or found[1].id != tenant_id:
        raise NotFound(f"no API key with prefix {prefix!r}")
    key, tenant, plan = found
    return _usable_caller(key, tenant, plan, now or utcnow())


def _usable_caller(key: ApiKey, tenant: Tenant, plan: Plan, now: datetime) -> AuthenticatedKey:
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
        scopes=key_scopes(key),
        allowed_models=key_models(key),
        expires_at=key.expires_at,
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

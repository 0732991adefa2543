"""Admin: customer API keys."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from billing.keys.schemas import ApiKeyPublic, CreatedApiKey, KeyRotation
from billing.keys.service import create_api_key, list_api_keys, revoke_api_key, rotate_api_key
from gateway.admin.auth import KeysRead, KeysWrite
from gateway.admin.deps import KeyPrefix, TenantFilter, in_transaction
from gateway.admin.schemas import KeyCreate, KeyRotate
from gateway.deps import DatabaseDep, KeyCacheDep, RequestId
from gateway.openapi import error_responses

router = APIRouter(prefix="/admin/keys", tags=["admin: keys"], responses=error_responses(404))


@router.get("")
def list_keys(
    database: DatabaseDep, _claims: KeysRead, tenant: TenantFilter = None
) -> list[ApiKeyPublic]:
    """Keys (never their secrets), optionally of one tenant."""
    return in_transaction(database, lambda session: list_api_keys(session, tenant))


@router.post("", status_code=status.HTTP_201_CREATED)
def create(
    body: KeyCreate, database: DatabaseDep, claims: KeysWrite, request_id: RequestId
) -> CreatedApiKey:
    """Create a key. The secret is in this response only; the ledger keeps a hash."""
    actor = claims.actor(request_id)
    expires_in = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    return in_transaction(
        database,
        lambda session: create_api_key(
            session,
            body.tenant,
            name=body.name,
            expires_in=expires_in,
            scopes=body.scopes,
            allowed_models=body.allowed_models,
            actor=actor,
        ),
    )


@router.post("/{prefix}/revoke")
def revoke(
    prefix: KeyPrefix,
    database: DatabaseDep,
    key_cache: KeyCacheDep,
    claims: KeysWrite,
    request_id: RequestId,
) -> ApiKeyPublic:
    """Revoke a key by its prefix; revoking twice is harmless."""
    actor = claims.actor(request_id)
    revoked = in_transaction(database, lambda session: revoke_api_key(session, prefix, actor=actor))
    key_cache.evict(revoked.prefix)
    return revoked


@router.post("/{prefix}/rotate", status_code=status.HTTP_201_CREATED)
def rotate(
    prefix: KeyPrefix,
    body: KeyRotate,
    database: DatabaseDep,
    key_cache: KeyCacheDep,
    claims: KeysWrite,
    request_id: RequestId,
) -> KeyRotation:
    """Issue a successor key (its secret is in this response only); the old key keeps working
    for ``grace_seconds`` so clients can switch without downtime."""
    actor = claims.actor(request_id)
    grace = timedelta(seconds=body.grace_seconds)
    rotation = in_transaction(
        database, lambda session: rotate_api_key(session, prefix, grace=grace, actor=actor)
    )
    key_cache.evict(rotation.old.prefix)
    return rotation

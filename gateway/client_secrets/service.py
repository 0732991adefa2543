"""Minting and redeeming client tokens.

A browser cannot set headers on a WebSocket, and a key in the URL sits in every proxy's access
log. So a server holding the API key mints a client token for the browser: it opens one
streaming session, as that key, within a short lifetime. It dies with its key: the key is
checked again (revoked, expired, scopes) when the token is presented.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from billing.db import Database
from billing.errors import InvalidApiKey, NotFound
from billing.keys.schemas import AuthenticatedKey
from billing.keys.service import caller_for_tenant_key
from billing.models import ClientSecret
from billing.models.types import utcnow
from gateway.client_secrets import repository
from gateway.console.sessions.service import hash_token, new_token

# What tells a client token from an API key (``sk-asrgw-…``), as OpenAI's are ``ek_…``.
CLIENT_SECRET_PREFIX = "ek_"


def is_client_secret(presented: str) -> bool:
    return presented.startswith(CLIENT_SECRET_PREFIX)


def mint_client_secret(
    session: Session, caller: AuthenticatedKey, lifetime: timedelta
) -> tuple[str, datetime]:
    """A new token for the caller's key, and when it expires."""
    token = CLIENT_SECRET_PREFIX + new_token()
    expires_at = utcnow() + lifetime
    repository.add_secret(
        session,
        ClientSecret(token_hash=hash_token(token), api_key_id=caller.key_id, expires_at=expires_at),
    )
    return token, expires_at


def redeem_client_secret(session: Session, token: str) -> AuthenticatedKey:
    """The caller the token stands for, once; ``InvalidApiKey`` when the token is unknown, used
    or expired, or its key is revoked or expired."""
    claimed = repository.claim_secret(session, hash_token(token), utcnow())
    if claimed is None:
        raise InvalidApiKey(
            "This client token is unknown, was used already or has expired: mint a new one "
            "with POST /v1/realtime/client_secrets for each connection."
        )
    tenant_id, key_prefix = claimed
    try:
        return caller_for_tenant_key(session, tenant_id, key_prefix)
    except NotFound:
        raise InvalidApiKey("The API key of this client token no longer exists.") from None


# A used or expired token is kept this long (nothing reads it), then deleted by the sweep.
CLIENT_SECRET_RETENTION = timedelta(hours=1)


def purge_client_secrets(database: Database) -> int:
    with database.transaction() as session:
        return repository.purge_secrets(session, utcnow() - CLIENT_SECRET_RETENTION)

"""Request dependencies, as typed aliases."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from billing.db import Database
from billing.errors import InvalidApiKey
from billing.keys.schemas import AuthenticatedKey, KeyScope
from billing.keys.service import authenticate
from gateway.cache.service import ResultCache
from gateway.config import GatewaySettings
from gateway.errors import AuthError, PermissionDenied
from gateway.keycache import KeyCache
from gateway.nodes import NodePool
from gateway.ratelimits.key_guesses import KeyGuessThrottle

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. Provide it in an Authorization header using Bearer auth "
    "(Authorization: Bearer YOUR_KEY) or in an X-API-Key header."
)


# The two ways to present a customer key, as security schemes of the OpenAPI document. Neither
# refuses on its own (auto_error=False): ``caller_of`` answers OpenAI's 401 when both are empty.
api_key_bearer = HTTPBearer(
    scheme_name="ApiKey",
    bearerFormat="sk-asrgw-…",
    description="A customer API key, as the OpenAI SDK sends it: `Authorization: Bearer <key>`.",
    auto_error=False,
)
api_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKeyHeader",
    description="A customer API key in the `X-API-Key` header.",
    auto_error=False,
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(api_key_bearer)]
ApiKeyHeaderValue = Annotated[str | None, Depends(api_key_header)]


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_nodes(request: Request) -> NodePool:
    nodes: NodePool = request.app.state.nodes
    return nodes


async def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def get_key_cache(request: Request) -> KeyCache:
    cache: KeyCache = request.app.state.key_cache
    return cache


async def get_result_cache(request: Request) -> ResultCache | None:
    cache: ResultCache | None = request.app.state.result_cache
    return cache


async def get_request_id(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


def authenticate_uncached(database: Database, presented: str) -> AuthenticatedKey:
    """The key looked up in the ledger, past any cache (blocking: run it in a worker thread)."""
    try:
        with database.transaction() as session:
            return authenticate(session, presented)
    except InvalidApiKey as error:
        raise AuthError(error.message) from None


async def require_api_key(
    request: Request,
    database: Annotated[Database, Depends(get_database)],
    bearer: BearerCredentials,
    x_api_key: ApiKeyHeaderValue,
) -> AuthenticatedKey:
    """The caller's key → tenant and plan. Keys found valid are kept for
    ``GATEWAY_KEY_CACHE_SECONDS``, which bounds how long a revocation takes to reach every
    replica; a cached key costs no database lookup and no worker thread."""
    return await caller_of(request, database, bearer, x_api_key)


async def caller_of(
    request: HTTPConnection,
    database: Database,
    bearer: HTTPAuthorizationCredentials | None,
    x_api_key: str | None,
) -> AuthenticatedKey:
    """``require_api_key``'s work, for dependencies that resolve the key themselves."""
    presented = bearer.credentials.strip() if bearer is not None else ""
    return await caller_for_key(request, database, presented or (x_api_key or "").strip())


def presented_api_key(headers: Headers) -> str:
    """The key as ``api_key_bearer`` and ``api_key_header`` read it, for code that runs before
    FastAPI resolves dependencies (``gateway.credentials_first``)."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key", "").strip()


async def caller_for_key(
    connection: HTTPConnection, database: Database, presented: str
) -> AuthenticatedKey:
    """The one lookup of a presented API key: the key cache, else the database, unless the
    client's address is past its failed authentications (gateway/ratelimits/key_guesses.py)."""
    if not presented:
        raise AuthError(MISSING_KEY_MESSAGE)
    cache: KeyCache = connection.app.state.key_cache
    cached = cache.get(presented)
    if cached is not None:
        return cached
    guesses: KeyGuessThrottle = connection.app.state.key_guesses
    address = connection.client.host if connection.client else None
    await guesses.refuse_if_throttled_async(address)
    try:
        caller = await anyio.to_thread.run_sync(authenticate_uncached, database, presented)
    except AuthError:
        await guesses.count_failure_async(address)
        raise
    cache.put(presented, caller)
    return caller


def require_key_scope(
    scope: KeyScope,
) -> Callable[[AuthenticatedKey], Coroutine[Any, Any, AuthenticatedKey]]:
    """A dependency admitting keys that hold ``scope``."""

    async def check(
        caller: Annotated[AuthenticatedKey, Depends(require_api_key)],
    ) -> AuthenticatedKey:
        refuse_without_scope(caller, scope)
        return caller

    return check


def refuse_without_scope(caller: AuthenticatedKey, scope: KeyScope) -> None:
    if scope not in caller.scopes:
        raise PermissionDenied(f"This API key lacks the scope '{scope.value}'.")


DatabaseDep = Annotated[Database, Depends(get_database)]
NodesDep = Annotated[NodePool, Depends(get_nodes)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
RequestId = Annotated[str, Depends(get_request_id)]
KeyCacheDep = Annotated[KeyCache, Depends(get_key_cache)]
ResultCacheDep = Annotated[ResultCache | None, Depends(get_result_cache)]
TenantKey = Annotated[AuthenticatedKey, Depends(require_api_key)]
TranscribeKey = Annotated[AuthenticatedKey, Depends(require_key_scope(KeyScope.transcribe))]
UsageKey = Annotated[AuthenticatedKey, Depends(require_key_scope(KeyScope.usage_read))]
ModelsKey = Annotated[AuthenticatedKey, Depends(require_key_scope(KeyScope.models_read))]

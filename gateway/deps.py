"""Request dependencies, as typed aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from billing.db import Database
from billing.errors import InvalidApiKey
from billing.keys.schemas import AuthenticatedKey
from billing.keys.service import authenticate
from gateway.config import GatewaySettings
from gateway.errors import AuthError
from gateway.nodes import NodeClient

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. Provide it in an Authorization header using Bearer auth "
    "(Authorization: Bearer YOUR_KEY) or in an X-API-Key header."
)


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_nodes(request: Request) -> NodeClient:
    nodes: NodeClient = request.app.state.nodes
    return nodes


def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def get_request_id(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


def require_api_key(
    database: Annotated[Database, Depends(get_database)],
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> AuthenticatedKey:
    """The caller's key → tenant and plan. A plain ``def``: FastAPI runs it in a worker thread,
    so the database lookup never blocks the event loop."""
    presented = ""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            presented = credentials.strip()
    presented = presented or (x_api_key or "").strip()
    if not presented:
        raise AuthError(MISSING_KEY_MESSAGE)
    try:
        with database.transaction() as session:
            return authenticate(session, presented)
    except InvalidApiKey as error:
        raise AuthError(error.message) from None


DatabaseDep = Annotated[Database, Depends(get_database)]
NodesDep = Annotated[NodeClient, Depends(get_nodes)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
RequestId = Annotated[str, Depends(get_request_id)]
TenantKey = Annotated[AuthenticatedKey, Depends(require_api_key)]

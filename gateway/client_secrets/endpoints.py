"""``POST /v1/realtime/client_secrets``: a client token for a browser's streaming WebSocket."""

from __future__ import annotations

from datetime import timedelta

import anyio
from fastapi import APIRouter

from billing.db import Database
from billing.keys.schemas import AuthenticatedKey
from gateway.client_secrets.schemas import ClientSecretCreate, ClientSecretPublic
from gateway.client_secrets.service import mint_client_secret
from gateway.deps import DatabaseDep, SettingsDep, TranscribeKey
from gateway.errors import InvalidRequest
from gateway.openapi import error_responses

router = APIRouter(tags=["streaming"])


def _mint(database: Database, caller: AuthenticatedKey, lifetime: timedelta) -> ClientSecretPublic:
    with database.transaction() as session:
        token, expires_at = mint_client_secret(session, caller, lifetime)
    return ClientSecretPublic(
        value=token, expires_at=int(expires_at.timestamp()), session={"type": "transcription"}
    )


@router.post(
    "/v1/realtime/client_secrets",
    response_model=ClientSecretPublic,
    responses=error_responses(403),
)
async def create_client_secret(
    caller: TranscribeKey,
    settings: SettingsDep,
    database: DatabaseDep,
    request: ClientSecretCreate | None = None,
) -> ClientSecretPublic:
    """Mint a client token: a browser opens one streaming WebSocket (``/v1/realtime``,
    ``/funasr``) with it instead of the API key, within its short lifetime."""
    seconds = settings.client_secret_seconds
    if request is not None and request.expires_after is not None:
        seconds = request.expires_after.seconds
    if seconds > settings.client_secret_max_seconds:
        raise InvalidRequest(
            f"A client token lives at most {settings.client_secret_max_seconds} seconds.",
            param="expires_after.seconds",
            code="invalid_value",
        )
    lifetime = timedelta(seconds=seconds)
    return await anyio.to_thread.run_sync(_mint, database, caller, lifetime)

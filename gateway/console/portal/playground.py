"""The portal's playground: transcribe an uploaded or browser-recorded file, billed like the API.

The customer picks one of their own active keys (by prefix) that may transcribe; the request is
billed to that key exactly as ``POST /v1/audio/transcriptions`` would bill it: the key's rate
limits, a reservation before dispatch, one ledger row, the charge the page shows logged as
returned to the client. ``transcribe_in_playground`` is the one place that runs that sequence.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from billing.db import Database
from billing.errors import InvalidApiKey
from billing.keys.schemas import AuthenticatedKey, KeyScope
from billing.keys.service import caller_for_tenant_key, list_api_keys
from billing.money import format_micros
from gateway.cache.service import ResultCache
from gateway.config import GatewaySettings
from gateway.console.deps import PortalPage, PortalWrite
from gateway.console.views import render
from gateway.deps import DatabaseDep, NodesDep, RequestId, ResultCacheDep, SettingsDep
from gateway.errors import PermissionDenied
from gateway.formats import MEDIA_TYPES, ResponseFormat, render_body
from gateway.nodes import NodePool
from gateway.ratelimits.service import RateLimits
from gateway.transcriptions.endpoints import parse_response_format, usage_body
from gateway.transcriptions.schemas import BilledTranscription, TranscriptionInput
from gateway.transcriptions.service import (
    log_returned_charge,
    read_upload,
    resolve_model,
    transcribe_and_bill,
)

router = APIRouter(prefix="/console/portal", tags=["console: portal"], include_in_schema=False)


async def transcribe_in_playground(
    request_id: str,
    caller: AuthenticatedKey,
    transcription: TranscriptionInput,
    *,
    nodes: NodePool,
    database: Database,
    settings: GatewaySettings,
    cache: ResultCache | None,
    rate_limits: RateLimits,
) -> BilledTranscription:
    """Admit under the key's rate limits, reserve, transcribe, settle, and log the charge the
    page will show: the API's billed sequence, run for a playground request."""
    admission = await rate_limits.admit(caller)
    try:
        billed = await transcribe_and_bill(
            request_id,
            caller,
            transcription,
            nodes=nodes,
            database=database,
            settings=settings,
            cache=cache,
        )
    finally:
        await rate_limits.release(admission)
    await log_returned_charge(database, caller.tenant_id, billed.charge)
    return billed


def _playground_key(database: Database, tenant_id: int, prefix: str) -> AuthenticatedKey:
    try:
        with database.transaction() as session:
            caller = caller_for_tenant_key(session, tenant_id, prefix)
    except InvalidApiKey as error:
        raise PermissionDenied(f"{error.message} Pick another key.", param="key_prefix") from None
    if KeyScope.transcribe not in caller.scopes:
        raise PermissionDenied(
            f"The key {prefix} lacks the scope '{KeyScope.transcribe.value}'.", param="key_prefix"
        )
    return caller


@router.get("/playground")
def playground_page(
    request: Request, database: DatabaseDep, settings: SettingsDep, caller: PortalPage
) -> Response:
    """Upload or record audio and see the transcript and its exact cost."""
    assert caller.tenant_name is not None
    tenant = caller.tenant_name
    with database.transaction() as session:
        keys = [
            key
            for key in list_api_keys(session, tenant)
            if key.revoked_at is None and KeyScope.transcribe in key.scopes
        ]
    return render(
        request,
        "portal/playground.html",
        {
            "keys": keys,
            "formats": list(ResponseFormat),
            "default_model": settings.default_model,
        },
    )


@router.post("/playground")
async def playground_transcribe(
    request: Request,
    caller: PortalWrite,
    request_id: RequestId,
    settings: SettingsDep,
    nodes: NodesDep,
    database: DatabaseDep,
    cache: ResultCacheDep,
    file: Annotated[UploadFile, File()],
    key_prefix: Annotated[str, Form()],
    response_format: Annotated[str, Form()] = "json",
    model: Annotated[str, Form()] = "",
    language: Annotated[str, Form()] = "",
) -> Response:
    """Transcribe the file with the chosen key; JSON with the rendered body and its charge."""
    assert caller.tenant_id is not None
    output_format = parse_response_format(response_format)
    key = await anyio.to_thread.run_sync(_playground_key, database, caller.tenant_id, key_prefix)
    audio = await read_upload(file, settings.max_upload_bytes)
    transcription = TranscriptionInput(
        audio=audio,
        filename=file.filename or "audio",
        content_type=file.content_type or "application/octet-stream",
        model=resolve_model(model.strip(), settings),
        language=language.strip() or "auto",
        prompt=None,
        granularities=frozenset(),
    )
    billed = await transcribe_in_playground(
        request_id,
        key,
        transcription,
        nodes=nodes,
        database=database,
        settings=settings,
        cache=cache,
        rate_limits=request.app.state.rate_limits,
    )
    body = render_body(billed.result, output_format, set(), usage_body(billed.charge))
    charge = billed.charge
    answer: dict[str, Any] = {
        "request_id": charge.request_id,
        "key_prefix": key.key_prefix,
        "response_format": output_format.value,
        "media_type": MEDIA_TYPES[output_format],
        "body": json.dumps(body, indent=2) if isinstance(body, dict) else body,
        "text": billed.result.text,
        "cached": billed.cached,
        "charge": {
            "output_tokens": charge.output_tokens,
            "billed_tokens": charge.billed_tokens,
            "token_unit": charge.token_unit,
            "price_per_1k_tokens_micros": charge.price_per_1k_tokens_micros,
            "cost_micros": charge.cost_micros,
            "cost": format_micros(charge.cost_micros, charge.currency),
            "currency": charge.currency,
            "audio_seconds": charge.audio_ms / 1000,
        },
    }
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})

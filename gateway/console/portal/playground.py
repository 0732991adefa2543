"""The portal's playground: transcribe an uploaded or browser-recorded file, billed like the API.

The customer picks one of their own active keys (by prefix) that may transcribe; the request is
billed to that key exactly as ``POST /v1/audio/transcriptions`` would bill it: the key's rate
limits, a reservation before dispatch, one ledger row, the charge the page shows recorded as
returned to the client: ``transcribe_in_playground`` runs the API's own billed sequence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from billing.db import Database
from billing.errors import InvalidApiKey
from billing.keys.schemas import AuthenticatedKey, KeyScope
from billing.keys.service import caller_for_tenant_key, list_api_keys
from billing.money import format_micros
from gateway.billed.call import BilledCall
from gateway.billed.dispatch import Billed
from gateway.billed.responses import charge_headers, usage_body
from gateway.console.deps import PortalPage, PortalWrite
from gateway.console.views import render
from gateway.deps import DatabaseDep, SettingsDep
from gateway.errors import PermissionDenied
from gateway.formats import MEDIA_TYPES, ResponseFormat, parse_response_format, render_body
from gateway.ratelimits.dependency import admitted
from gateway.transcriptions.schemas import TranscriptionInput
from gateway.transcriptions.service import read_upload, resolve_model, transcribe
from inference.protocol import TranscriptionResult

router = APIRouter(prefix="/console/portal", tags=["console: portal"], include_in_schema=False)


async def transcribe_in_playground(
    request: Request,
    caller: AuthenticatedKey,
    transcription: TranscriptionInput,
    render: Callable[[Billed[TranscriptionResult]], Response],
) -> Response:
    """The API's billed sequence for a playground request: admitted under the key's rate
    limits, then held, transcribed and settled by ``gateway.billed`` (one ledger row with the
    charge the page shows recorded as returned)."""
    async with admitted(request, caller, request.app.state.rate_limits):
        return await transcribe(BilledCall.of(request, caller), transcription, render)


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
    settings: SettingsDep,
    database: DatabaseDep,
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

    def answer(billed: Billed[TranscriptionResult]) -> Response:
        body = render_body(billed.result, output_format, set(), usage_body(billed.charge))
        charge = billed.charge
        page: dict[str, Any] = {
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
        headers = {"Cache-Control": "no-store", **charge_headers(charge, cached=billed.cached)}
        return JSONResponse(page, headers=headers)

    return await transcribe_in_playground(request, key, transcription, answer)

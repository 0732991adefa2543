"""``Idempotency-Key``: a client retry gets the original response and is billed nothing more.

The first request with a key owns it and does the work; concurrent duplicates wait for its
response and replay it byte for byte. If the owner fails, the key is freed and the next retry
does the work itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable

import anyio
from fastapi import Request
from fastapi.responses import Response

from billing.db import Database
from billing.errors import Conflict
from billing.idempotency import service as records
from billing.models import IdempotencyRecord
from gateway.errors import IdempotencyConflict

POLL_SECONDS = 0.1
REPLAYED_HEADERS = (
    "x-billing-output-tokens",
    "x-billing-cost-micros",
    "x-billing-currency",
    "x-cache",
)


def fingerprint(audio: bytes, parameters: dict[str, object]) -> str:
    digest = hashlib.sha256(hashlib.md5(audio, usedforsecurity=False).digest())
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def replay(record: IdempotencyRecord) -> Response:
    headers = json.loads(record.headers or "{}")
    headers["idempotent-replayed"] = "true"
    return Response(
        content=record.body or "",
        status_code=record.status_code or 200,
        media_type=record.media_type,
        headers=headers,
    )


async def run_once(
    database: Database,
    tenant_id: int,
    key: str,
    request_fingerprint: str,
    request_id: str,
    work: Callable[[], Awaitable[Response]],
    *,
    wait_seconds: float,
) -> Response:
    deadline = time.monotonic() + wait_seconds
    try:
        record = await anyio.to_thread.run_sync(
            records.claim, database, tenant_id, key, request_fingerprint, request_id
        )
        while record is not None:
            if record.state == "completed":
                return replay(record)
            if time.monotonic() > deadline:
                raise IdempotencyConflict(
                    "A request with this Idempotency-Key is still in progress; retry later.",
                    code="idempotency_request_in_progress",
                )
            await asyncio.sleep(POLL_SECONDS)
            record = await anyio.to_thread.run_sync(records.lookup, database, tenant_id, key)
            if record is None:  # the owner failed and freed the key: take it over
                record = await anyio.to_thread.run_sync(
                    records.claim, database, tenant_id, key, request_fingerprint, request_id
                )
    except Conflict as error:
        raise IdempotencyConflict(error.message, param="Idempotency-Key") from None
    try:
        response = await work()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(records.abandon, database, tenant_id, key, request_id)
        raise
    headers = {
        name: response.headers[name] for name in REPLAYED_HEADERS if name in response.headers
    }
    await anyio.to_thread.run_sync(
        lambda: records.complete(
            database,
            tenant_id,
            key,
            status_code=response.status_code,
            media_type=response.media_type or "application/json",
            headers=headers,
            body=bytes(response.body).decode(),
        )
    )
    return response


async def respond_once(
    request: Request,
    database: Database,
    tenant_id: int,
    request_id: str,
    audio: bytes,
    parameters: dict[str, object],
    work: Callable[[], Awaitable[Response]],
    *,
    wait_seconds: float,
) -> Response:
    """``work()``'s response, made once per ``Idempotency-Key`` when the client sends one. The
    route's path is part of the fingerprint: one key cannot be reused across endpoints."""
    key = request.headers.get("idempotency-key")
    if not key:
        return await work()
    request_fingerprint = fingerprint(audio, {"route": request.url.path, **parameters})
    return await run_once(
        database, tenant_id, key, request_fingerprint, request_id, work, wait_seconds=wait_seconds
    )

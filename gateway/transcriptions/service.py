"""Probe, reserve, transcribe, settle — in that order.

Nothing is billed unless a transcript came back; the reservation is released on any failure
before that; the usage row is committed before the response is sent.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import anyio
from fastapi import UploadFile

from billing.db import Database
from billing.errors import InsufficientQuota
from billing.keys.schemas import AuthenticatedKey
from billing.reservations import service as reservations
from billing.usage.schemas import BillableTranscription, UsageCharge
from billing.usage.service import record_returned_charge
from gateway import metrics
from gateway.audio_probe import probe_duration_ms
from gateway.cache.keys import audio_md5
from gateway.cache.service import ResultCache
from gateway.config import OPENAI_MODEL_ALIASES, GatewaySettings
from gateway.errors import (
    AudioTooLong,
    FileTooLarge,
    InvalidAudio,
    PermissionDenied,
    QuotaExceeded,
)
from gateway.formats import TimestampGranularity
from gateway.nodes import NodePool
from gateway.transcriptions.schemas import BilledTranscription, TranscriptionInput
from inference.protocol import TranscribeParams

UPLOAD_CHUNK_BYTES = 1024 * 1024
logger = logging.getLogger(__name__)


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The uploaded bytes, refusing more than ``max_bytes`` and refusing an empty file."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(UPLOAD_CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLarge(
                f"The uploaded file exceeds the limit of {max_bytes} bytes.", param="file"
            )
        chunks.append(chunk)
    if total == 0:
        raise InvalidAudio("The audio file is empty (0 bytes).", param="file")
    return b"".join(chunks)


def refuse_long_sync_audio(audio_ms: int, settings: GatewaySettings) -> None:
    """Synchronous calls take audio up to ``GATEWAY_MAX_SYNC_AUDIO_SECONDS``; longer audio is
    refused before anything is reserved, pointing to the jobs API."""
    limit_seconds = settings.max_sync_audio_seconds
    if audio_ms > limit_seconds * 1000:
        raise AudioTooLong(
            f"The audio is {audio_ms / 1000:g} seconds long; synchronous requests accept at most "
            f"{limit_seconds:g} seconds. Submit longer audio as an asynchronous job with "
            "POST /v1/jobs.",
            param="file",
        )


def resolve_model(requested: str, settings: GatewaySettings) -> str:
    if not requested or requested in OPENAI_MODEL_ALIASES:
        return settings.default_model
    return requested


def refuse_disallowed_model(caller: AuthenticatedKey, model: str) -> None:
    """403 before anything is probed or reserved when the key may not use ``model``."""
    if not caller.allows_model(model):
        raise PermissionDenied(f"This API key may not use the model '{model}'.", param="model")


def reserve_or_refuse(
    database: Database,
    request_id: str,
    caller: AuthenticatedKey,
    audio_ms: int,
    ttl: timedelta,
    cached: bool = False,
) -> None:
    try:
        with database.transaction() as session:
            reservations.reserve(session, request_id, caller, audio_ms, ttl=ttl, cached=cached)
    except InsufficientQuota as error:
        metrics.QUOTA_REJECTIONS.inc()
        raise QuotaExceeded(error.message) from None


def release(database: Database, request_id: str) -> None:
    with database.transaction() as session:
        reservations.release(session, request_id)


def settle(database: Database, billable: BillableTranscription) -> UsageCharge:
    with database.transaction() as session:
        charge = reservations.settle(session, billable)
    metrics.record_charge(billable, charge)
    return charge


def _record_returned(database: Database, tenant_id: int, charge: UsageCharge) -> None:
    with database.transaction() as session:
        record_returned_charge(session, tenant_id, charge)


async def log_returned_charge(database: Database, tenant_id: int, charge: UsageCharge) -> None:
    """Record what this response tells the client, apart from the ledger row. A failure here
    must not fail a request that is already billed: reconciliation will flag the gap."""
    try:
        await anyio.to_thread.run_sync(_record_returned, database, tenant_id, charge)
    except Exception:
        logger.exception("could not record the returned charge of %s", charge.request_id)


async def transcribe_and_bill(
    request_id: str,
    caller: AuthenticatedKey,
    request: TranscriptionInput,
    *,
    nodes: NodePool,
    database: Database,
    settings: GatewaySettings,
    cache: ResultCache | None = None,
) -> BilledTranscription:
    """Answered from the result cache when the tenant sent this audio with these parameters
    before (billed at the plan's cache-hit price and recorded as cached), else by a node."""
    refuse_disallowed_model(caller, request.model)
    audio_ms = await anyio.to_thread.run_sync(probe_duration_ms, request.audio)
    refuse_long_sync_audio(audio_ms, settings)
    # A reservation outlives a crashed gateway by at most this long; then the sweeper frees it.
    ttl = timedelta(seconds=settings.node_timeout_seconds + settings.reservation_margin_seconds)
    params = TranscribeParams(
        model=request.model,
        language=request.language or "auto",
        hotwords=request.prompt or None,
        word_timestamps=TimestampGranularity.word in request.granularities,
        temperature=request.temperature or None,
    )
    md5 = audio_md5(request.audio)
    cached = await cache.lookup(caller.tenant_id, md5, params) if cache is not None else None
    await anyio.to_thread.run_sync(
        reserve_or_refuse, database, request_id, caller, audio_ms, ttl, cached is not None
    )
    if cached is not None:
        result = cached
    else:
        try:
            result = await nodes.transcribe(
                request.audio, request.filename, request.content_type, params, audio_ms=audio_ms
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(release, database, request_id)
            raise
    billable = BillableTranscription(
        request_id=request_id,
        caller=caller,
        model=result.model,
        audio_ms=round(result.duration * 1000),
        transcript=result.text,
        cached=cached is not None,
    )
    charge = await anyio.to_thread.run_sync(settle, database, billable)
    if cache is not None and cached is None:
        await cache.remember(caller.tenant_id, md5, params, result)
    return BilledTranscription(result=result, charge=charge, cached=cached is not None)

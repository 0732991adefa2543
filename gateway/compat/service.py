"""Language detection, billed like a transcription: its output is the language code."""

from __future__ import annotations

from datetime import timedelta

import anyio

from billing.db import Database
from billing.keys.schemas import AuthenticatedKey
from billing.usage.schemas import BillableTranscription, UsageCharge
from gateway.audio_probe import probe_duration_ms
from gateway.config import GatewaySettings
from gateway.nodes import NodePool
from gateway.transcriptions.service import (
    refuse_disallowed_model,
    release,
    reserve_or_refuse,
    settle,
)
from inference.protocol import LanguageDetection


async def detect_and_bill(
    request_id: str,
    caller: AuthenticatedKey,
    audio: bytes,
    filename: str,
    content_type: str,
    model: str,
    *,
    nodes: NodePool,
    database: Database,
    settings: GatewaySettings,
) -> tuple[LanguageDetection, UsageCharge]:
    refuse_disallowed_model(caller, model)
    audio_ms = await anyio.to_thread.run_sync(probe_duration_ms, audio)
    ttl = timedelta(seconds=settings.node_timeout_seconds + settings.reservation_margin_seconds)
    await anyio.to_thread.run_sync(reserve_or_refuse, database, request_id, caller, audio_ms, ttl)
    try:
        detection = await nodes.detect_language(
            audio, filename, content_type, model, audio_ms=audio_ms
        )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(release, database, request_id)
        raise
    billable = BillableTranscription(
        request_id=request_id,
        caller=caller,
        model=detection.model,
        audio_ms=audio_ms,
        transcript=detection.language,
    )
    charge = await anyio.to_thread.run_sync(settle, database, billable)
    return detection, charge

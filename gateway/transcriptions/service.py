"""Transcribe on a node, bill the caller, in that order; nothing is billed unless a transcript
came back, and the ledger row is committed before the response is sent."""

from __future__ import annotations

import anyio
from fastapi import UploadFile

from billing.db import Database
from billing.keys.schemas import AuthenticatedKey
from billing.usage.schemas import BillableTranscription, UsageCharge
from billing.usage.service import record_transcription
from gateway.config import OPENAI_MODEL_ALIASES, GatewaySettings
from gateway.errors import FileTooLarge, InvalidAudio
from gateway.formats import TimestampGranularity
from gateway.nodes import NodeClient
from gateway.transcriptions.schemas import BilledTranscription, TranscriptionInput
from inference.protocol import TranscribeParams

UPLOAD_CHUNK_BYTES = 1024 * 1024


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


def resolve_model(requested: str, settings: GatewaySettings) -> str:
    if not requested or requested in OPENAI_MODEL_ALIASES:
        return settings.default_model
    return requested


def _record(database: Database, billable: BillableTranscription) -> UsageCharge:
    with database.transaction() as session:
        return record_transcription(session, billable)


async def transcribe_and_bill(
    request_id: str,
    caller: AuthenticatedKey,
    request: TranscriptionInput,
    *,
    nodes: NodeClient,
    database: Database,
) -> BilledTranscription:
    params = TranscribeParams(
        model=request.model,
        language=request.language or "auto",
        hotwords=request.prompt or None,
        word_timestamps=TimestampGranularity.word in request.granularities,
    )
    result = await nodes.transcribe(request.audio, request.filename, request.content_type, params)
    billable = BillableTranscription(
        request_id=request_id,
        caller=caller,
        model=result.model,
        audio_ms=round(result.duration * 1000),
        transcript=result.text,
    )
    charge = await anyio.to_thread.run_sync(_record, database, billable)
    return BilledTranscription(result=result, charge=charge)

"""``/v1/jobs``: asynchronous transcription for long audio (AssemblyAI-style), with the
parameters of OpenAI's ``POST /v1/audio/transcriptions`` plus a webhook."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, File, Form, Header, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from gateway.billed.responses import charge_headers
from gateway.deps import DatabaseDep, SettingsDep, TranscribeKey
from gateway.errors import InvalidRequest
from gateway.formats import (
    MEDIA_TYPES,
    TEXT_MEDIA_TYPES,
    ResponseFormat,
    parse_granularities,
)
from gateway.jobs import service
from gateway.jobs.errors import JobNotCompleted, JobResultExpired
from gateway.jobs.schemas import JobList, JobPublic, JobRequest, JobStatus
from gateway.jobs.storage import AudioStore
from gateway.jobs.views import rendered_result
from gateway.languages import AUTO, Language
from gateway.openapi import BILLED_ERRORS, error_responses, text_content
from gateway.ratelimits.dependency import RateLimitedKey
from gateway.transcriptions.schemas import (
    GranularitiesForm,
    ModelForm,
    PromptForm,
    TranscriptionJson,
    TranscriptionVerboseJson,
)
from gateway.transcriptions.service import read_upload, resolve_model

router = APIRouter()


def get_job_store(request: Request) -> AudioStore:
    store: AudioStore = request.app.state.job_store
    return store


JobStoreDep = Annotated[AudioStore, Depends(get_job_store)]
JobId = Annotated[str, Path(max_length=64)]


@router.post(
    "/v1/jobs",
    status_code=201,
    response_model=None,
    responses={
        201: {"description": "The job, queued.", "model": JobPublic},
        200: {
            "description": "The job an earlier request with this Idempotency-Key created "
            "(header idempotent-replayed: true).",
            "model": JobPublic,
        },
        **BILLED_ERRORS,
    },
)
async def create_job(
    caller: TranscribeKey,
    _admitted: RateLimitedKey,
    settings: SettingsDep,
    database: DatabaseDep,
    store: JobStoreDep,
    file: Annotated[UploadFile, File(description="The audio file to transcribe.")],
    model: ModelForm,
    language: Annotated[Language, Form()] = AUTO,
    prompt: PromptForm = "",
    response_format: Annotated[ResponseFormat, Form()] = ResponseFormat.json,
    temperature: Annotated[
        float | None,
        Form(ge=0, le=1, description="Accepted for compatibility; jobs decode by beam search."),
    ] = None,
    timestamp_granularities: GranularitiesForm = None,
    webhook_url: Annotated[str | None, Form(max_length=2048)] = None,
    webhook_secret: Annotated[str | None, Form(min_length=16, max_length=255)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Queue audio of any length for transcription; answers 201 with the job at once."""
    del temperature  # accepted for compatibility; decoding here is deterministic
    output_format = response_format
    granularities = parse_granularities(timestamp_granularities, output_format)
    if webhook_secret and not webhook_url:
        raise InvalidRequest(
            "webhook_secret needs a webhook_url.", param="webhook_secret", code="invalid_value"
        )
    audio = await read_upload(file, settings.job_max_upload_bytes)
    request = JobRequest(
        audio=audio,
        filename=file.filename or "audio",
        content_type=file.content_type or "application/octet-stream",
        model=resolve_model(model, settings),
        language=language,
        prompt=prompt or None,
        response_format=output_format,
        granularities=granularities,
        webhook_url=webhook_url or None,
        webhook_secret=webhook_secret or None,
        idempotency_key=idempotency_key or None,
    )
    job, created = await service.submit_job(
        caller, request, database=database, store=store, settings=settings
    )
    headers = {} if created else {"idempotent-replayed": "true"}
    return JSONResponse(
        job.model_dump(mode="json"), status_code=201 if created else 200, headers=headers
    )


@router.get("/v1/jobs", response_model=JobList)
async def list_jobs(
    caller: TranscribeKey,
    settings: SettingsDep,
    database: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[JobStatus | None, Query()] = None,
) -> JobList:
    """The caller's tenant's jobs, newest first; ``after`` is the ``last_id`` of the page before."""
    return await anyio.to_thread.run_sync(
        lambda: service.list_jobs(
            database, caller.tenant_id, settings, limit=limit, after=after, status=status
        )
    )


@router.get(
    "/v1/jobs/{job_id}",
    response_model=None,
    responses={
        200: {
            "description": "The job; with response_format, only its result in that format.",
            "model": JobPublic | TranscriptionJson | TranscriptionVerboseJson,
            "content": text_content(*TEXT_MEDIA_TYPES),
        },
        **error_responses(404, 409, 410),
    },
)
async def get_job(
    job_id: JobId,
    caller: TranscribeKey,
    settings: SettingsDep,
    database: DatabaseDep,
    response_format: Annotated[ResponseFormat | None, Query()] = None,
) -> JobPublic | Response:
    """The job's status, progress and result; with ``response_format`` only the result, exactly
    as ``POST /v1/audio/transcriptions`` would have answered it in that format."""
    if response_format is None:
        return await anyio.to_thread.run_sync(
            service.job_view, database, caller.tenant_id, job_id, settings
        )
    output_format = response_format
    job = await anyio.to_thread.run_sync(service.get_job, database, caller.tenant_id, job_id)
    rendered = rendered_result(job, output_format)
    if rendered is None:
        if job.result_purged_at is not None:
            raise JobResultExpired(
                f"The result of job '{job_id}' was erased at the end of its retention period."
            )
        raise JobNotCompleted(
            f"Job '{job_id}' is {job.state}; its result is available once it is completed."
        )
    body, charge = rendered
    headers = charge_headers(charge, cached=job.cached)
    if isinstance(body, dict):
        return JSONResponse(body, headers=headers)
    return Response(body, media_type=MEDIA_TYPES[output_format], headers=headers)


@router.delete("/v1/jobs/{job_id}", responses=error_responses(404))
async def cancel_job(
    job_id: JobId,
    caller: TranscribeKey,
    settings: SettingsDep,
    database: DatabaseDep,
    store: JobStoreDep,
) -> JobPublic:
    """Cancel a queued or processing job (nothing is billed); on a finished job, erase its
    result and audio."""
    return await service.cancel_job(database, store, caller.tenant_id, job_id, settings)

"""Job workers: loops inside every gateway process that claim jobs from the ledger database
and work them one at a time, renewing their lease while the node transcribes.

A lease lasts ``GATEWAY_JOB_LEASE_SECONDS`` and is renewed every third of it. When renewal
finds the job no longer this claim's (cancelled, or taken over after the lease lapsed), the
attempt is abandoned at once. A node outage puts the job back with exponential backoff; a
refusal of the audio or parameters fails it; a shutdown puts it back without using an attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from contextlib import AbstractContextManager, nullcontext

import anyio
from pydantic import BaseModel

from billing.db import Database
from billing.reservations.service import Settlement
from billing.usage.schemas import BillableTranscription
from gateway.billed.dispatch import Order, run_billed
from gateway.cache.service import ResultCache
from gateway.config import GatewaySettings
from gateway.errors import GatewayError, UpstreamUnavailable
from gateway.formats import TimestampGranularity
from gateway.jobs import lifecycle
from gateway.jobs.lifecycle import Claim
from gateway.jobs.storage import AudioStore
from gateway.jobs.views import granularities_of
from gateway.nodes import NodePool
from gateway.transcriptions.service import transcript_usage
from inference.protocol import TranscribeParams, TranscriptionResult

logger = logging.getLogger(__name__)


def worker_identity() -> str:
    """Who holds a lease: host, process id and a per-start nonce."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def worker_count(settings: GatewaySettings, database: Database) -> int:
    """``GATEWAY_JOB_WORKERS``, but one at most on SQLite, whose writes are serialized anyway."""
    if database.engine.dialect.name == "sqlite":
        return min(settings.job_workers, 1)
    return settings.job_workers


class _LeaseLost(Exception):
    """The claim no longer holds its job (cancelled, or taken over after its lease lapsed)."""


class JobBilling:
    """A job's money in the one billed sequence (``gateway.billed.dispatch``): its worst case
    was held when it was queued and stays held across retries; the worker's lease keeps it;
    a failure is the worker's to handle (put back, or failed and released); the settlement
    and the job's completion are one transaction, only while this claim holds the job."""

    def __init__(self, database: Database, claim: Claim) -> None:
        self.database = database
        self.claim = claim
        self.request_id = claim.job.id
        self.caller = claim.caller

    async def hold(self, audio_ms: int, *, cached: bool) -> None:
        """Held at submission."""

    def keep_alive(self) -> AbstractContextManager[object]:
        return nullcontext()

    async def before_settle(self) -> None:
        """A job's result is kept for the client to fetch: nothing to check."""

    async def abandon(self) -> None:
        """The worker puts the job back (the hold stays) or fails it (releasing the hold)."""

    async def settle(self, billable: BillableTranscription, result: BaseModel) -> Settlement:
        assert isinstance(result, TranscriptionResult)
        settlement = await anyio.to_thread.run_sync(
            lambda: lifecycle.complete(self.database, self.claim, billable, result)
        )
        if settlement is None:
            raise _LeaseLost(self.request_id)
        return settlement


class JobWorker:
    def __init__(
        self,
        database: Database,
        nodes: NodePool,
        store: AudioStore,
        settings: GatewaySettings,
        *,
        cache: ResultCache | None = None,
        owner: str | None = None,
    ) -> None:
        self.database = database
        self.nodes = nodes
        self.store = store
        self.settings = settings
        self.cache = cache
        self.owner = owner or worker_identity()

    async def run(self) -> None:
        """Claim and work jobs until cancelled."""
        while True:
            try:
                worked = await self.work_next()
            except Exception:
                logger.exception("job worker failed")
                worked = False
            if not worked:
                await anyio.sleep(self.settings.job_poll_seconds)

    async def work_next(self) -> bool:
        """Claim one job and work it; False when there was none."""
        claim = await anyio.to_thread.run_sync(
            lambda: lifecycle.claim_next(
                self.database,
                self.owner,
                lease_seconds=self.settings.job_lease_seconds,
                max_attempts=self.settings.job_max_attempts,
            )
        )
        if claim is None:
            return False
        logger.info(
            "job %s claimed by %s (attempt %d)", claim.job.id, self.owner, claim.job.attempts
        )
        try:
            await self._work(claim)
        except anyio.get_cancelled_exc_class():
            # Shutting down: hand the job back for another replica (or this one, restarted).
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    lambda: lifecycle.requeue(self.database, claim, 0, count_attempt=False)
                )
            raise
        return True

    async def _work(self, claim: Claim) -> None:
        lost = ended = False
        lease_seconds = self.settings.job_lease_seconds
        async with anyio.create_task_group() as group:

            async def keep_lease() -> None:
                nonlocal lost
                while True:
                    await anyio.sleep(lease_seconds / 3)
                    try:
                        held = await anyio.to_thread.run_sync(
                            lifecycle.renew_lease,
                            self.database,
                            claim,
                            self.settings.job_lease_seconds,
                        )
                    except Exception:
                        logger.exception("could not renew the lease of job %s", claim.job.id)
                        continue  # the lease may still hold; the next renewal tries again
                    if not held:
                        lost = True
                        group.cancel_scope.cancel()
                        return

            group.start_soon(keep_lease)
            ended = await self._attempt(claim)
            group.cancel_scope.cancel()
        if ended:
            # Outside the lease keeping: once the job has ended its lease no longer renews, and
            # that must not cut the clean-up short.
            await self._delete_audio(claim)
        if lost:
            logger.info(
                "job %s is no longer %s's (cancelled or taken over)", claim.job.id, self.owner
            )

    async def _attempt(self, claim: Claim) -> bool:
        """One attempt at the job; True when the job has ended (its audio may go)."""
        job = claim.job
        try:
            order = await self._order(claim)
            billed = await run_billed(JobBilling(self.database, claim), order, TranscriptionResult)
        except _LeaseLost:
            logger.info("job %s finished but is no longer %s's; result dropped", job.id, self.owner)
            return False
        except UpstreamUnavailable as error:
            return await self._retry_or_fail(
                claim, error.code, error.message, error.retry_after_seconds
            )
        except GatewayError as error:
            logger.info("job %s failed: %s", job.id, error.message)
            await anyio.to_thread.run_sync(
                lifecycle.fail, self.database, claim, error.code, error.message
            )
            return True
        except Exception:
            logger.exception("job %s: unexpected failure", job.id)
            message = "The job failed unexpectedly; nothing was billed."
            return await self._retry_or_fail(claim, "internal_error", message, 0.0)
        logger.info("job %s completed: %d tokens billed", job.id, billed.charge.billed_tokens)
        return True

    async def _order(self, claim: Claim) -> Order[TranscriptionResult]:
        """The job's work: its cached result, or the node's transcript of its stored audio."""
        job = claim.job
        params = self._params(claim)
        cached = None
        if self.cache is not None:
            cached = await self.cache.lookup(job.tenant_id, job.audio_md5, params)

        async def produce() -> TranscriptionResult:
            try:
                if job.audio_key is None:
                    raise FileNotFoundError(job.id)
                audio = await anyio.to_thread.run_sync(self.store.get, job.audio_key)
            except FileNotFoundError:
                raise GatewayError(
                    "The job's audio is no longer stored; nothing was billed.",
                    code="audio_missing",
                ) from None
            result = await self.nodes.transcribe(
                audio,
                job.filename,
                job.content_type,
                params,
                audio_ms=job.audio_ms,
                timeout_seconds=self.settings.job_node_timeout_seconds,
            )
            if self.cache is not None:
                try:
                    await self.cache.remember(job.tenant_id, job.audio_md5, params, result)
                except Exception:
                    logger.exception("could not cache the result of job %s", job.id)
            return result

        return Order(job.audio_ms, produce, transcript_usage, cached)

    def _params(self, claim: Claim) -> TranscribeParams:
        job = claim.job
        return TranscribeParams(
            model=job.model,
            language=job.language or "auto",
            hotwords=job.prompt or None,
            word_timestamps=TimestampGranularity.word in granularities_of(job),
        )

    async def _retry_or_fail(
        self, claim: Claim, code: str, message: str, retry_after_seconds: float
    ) -> bool:
        """A transient failure: the job goes back with backoff, or fails when out of attempts
        (True: it has ended)."""
        attempts = claim.job.attempts
        if attempts >= self.settings.job_max_attempts:
            await anyio.to_thread.run_sync(lifecycle.fail, self.database, claim, code, message)
            return True
        delay = max(retry_after_seconds, self.settings.job_retry_base_seconds * 2 ** (attempts - 1))
        logger.warning("job %s: %s; retrying in %.1f s", claim.job.id, message, delay)
        await anyio.to_thread.run_sync(lambda: lifecycle.requeue(self.database, claim, delay))
        return False

    async def _delete_audio(self, claim: Claim) -> None:
        """The job has ended: its audio goes (the maintenance loop retries what fails here)."""
        key = claim.job.audio_key
        if key is None:
            return
        try:
            await anyio.to_thread.run_sync(self.store.delete, key)
            await anyio.to_thread.run_sync(lifecycle.forget_audio, self.database, claim.job.id, key)
        except Exception:
            logger.exception("could not delete the audio of job %s", claim.job.id)

"""The jobs' clean-up, run by every replica (each step locks what it changes, SKIP LOCKED):
fail jobs past their deadline, erase results past the retention period, delete the audio of
ended jobs that a crash left behind, and audio whose job was never committed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import anyio

from billing.db import Database
from billing.models.types import utcnow
from gateway.config import GatewaySettings
from gateway.jobs import lifecycle, repository
from gateway.jobs.storage import AudioStore

logger = logging.getLogger(__name__)

# Audio with no job row this long after it was written belongs to a submission that died
# between storing it and committing the job.
ORPHAN_AFTER = timedelta(hours=1)


def clean_up(
    database: Database, store: AudioStore, settings: GatewaySettings, now: datetime | None = None
) -> None:
    now = now or utcnow()
    expired = lifecycle.expire_overdue(database, now)
    if expired:
        logger.warning("%d jobs failed past their deadline", expired)
    purged = lifecycle.purge_results(database, settings.job_result_retention_seconds, now)
    if purged:
        logger.info("erased the results of %d jobs past the retention period", purged)
    with database.transaction() as session:
        leftovers = repository.ended_with_audio(session)
    for job_id, key in leftovers:
        store.delete(key)
        lifecycle.forget_audio(database, job_id, key)
    stale = store.stale_keys(now - ORPHAN_AFTER)
    if stale:
        with database.transaction() as session:
            needed = repository.unfinished_ids(session, stale)
        for key in stale:
            if key not in needed:
                store.delete(key)


async def run_maintenance(database: Database, store: AudioStore, settings: GatewaySettings) -> None:
    """Clean up every ``GATEWAY_JOB_MAINTENANCE_SECONDS`` until cancelled."""
    while True:
        try:
            await anyio.to_thread.run_sync(clean_up, database, store, settings)
        except Exception:
            logger.exception("job clean-up failed")
        await anyio.sleep(settings.job_maintenance_seconds)

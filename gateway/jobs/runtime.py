"""The jobs' background tasks in a gateway process: workers, webhook senders, clean-up."""

from __future__ import annotations

import anyio
from anyio.abc import TaskGroup, TaskStatus

from billing.db import Database
from gateway.cache.service import ResultCache
from gateway.config import GatewaySettings
from gateway.jobs.maintenance import run_maintenance
from gateway.jobs.storage import AudioStore, build_audio_store
from gateway.jobs.webhooks.senders import run_webhook_delivery
from gateway.jobs.worker import JobWorker, worker_count
from gateway.nodes import NodePool


def start_job_tasks(
    group: TaskGroup,
    database: Database,
    nodes: NodePool,
    settings: GatewaySettings,
    cache: ResultCache | None,
) -> AudioStore:
    """Start them in ``group`` (cancelling it stops them; a job being worked goes back to the
    queue) and return the audio store the endpoints write to."""
    store = build_audio_store(settings)
    for _ in range(worker_count(settings, database)):
        group.start_soon(JobWorker(database, nodes, store, settings, cache=cache).run)
    group.start_soon(run_webhook_delivery, database, settings)
    group.start_soon(run_maintenance, database, store, settings)
    return store


async def run_job_tasks(
    scope: anyio.CancelScope,
    database: Database,
    nodes: NodePool,
    settings: GatewaySettings,
    cache: ResultCache | None,
    *,
    task_status: TaskStatus[AudioStore] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The job tasks in a group of their own under ``scope``, which stops them and nothing else
    (a draining gateway cancels it); ``task_status`` gets the audio store."""
    with scope:
        async with anyio.create_task_group() as group:
            task_status.started(start_job_tasks(group, database, nodes, settings, cache))

"""Every replica's pool follows the shared membership in the ledger database.

The admin API writes there (``billing.pool``) and applies the change to its own replica's pool
at once; every other replica re-reads the table each ``GATEWAY_NODE_HEALTH_INTERVAL_SECONDS`` and
converges: registered nodes are added, nodes no longer registered are removed, and drain flags
are set as stored. Configured nodes (``GATEWAY_NODES``) are never removed. A registered node
whose host is not allowed (``allowed.py``) is skipped: no health check, no request.
"""

from __future__ import annotations

import logging

import anyio

from billing.db import Database
from billing.pool.service import PoolNodeState, pool_membership
from gateway.nodes.errors import NodeNotAllowed
from gateway.nodes.node import NodeSource
from gateway.nodes.pool import NodePool

logger = logging.getLogger(__name__)


def apply_membership(pool: NodePool, membership: list[PoolNodeState]) -> None:
    rows = {state.url: state for state in membership}
    for state in membership:
        if not state.registered:
            continue
        try:
            pool.add(state.url)
        except NodeNotAllowed:
            # Registered before its host was refused (or under other settings): never sent
            # the node secret or audio.
            logger.warning("registered node %s is not at an allowed host; skipped", state.url)
    for node in pool.snapshot():
        row = rows.get(node.url)
        allowed = pool.allowed_hosts.allows(node.url)
        if node.source is NodeSource.runtime and (row is None or not row.registered or not allowed):
            pool.remove(node.url)
            continue
        draining = row.draining if row is not None else False
        if draining and not node.draining:
            pool.drain(node.url)
        elif node.draining and not draining:
            pool.undrain(node.url)


def _read(database: Database) -> list[PoolNodeState]:
    with database.transaction() as session:
        return pool_membership(session)


async def sync_membership(pool: NodePool, database: Database) -> None:
    membership = await anyio.to_thread.run_sync(_read, database)
    apply_membership(pool, membership)


async def run_membership_sync(pool: NodePool, database: Database, interval_seconds: float) -> None:
    """Follow the shared membership until cancelled (the app's lifespan runs this)."""
    while True:
        try:
            await sync_membership(pool, database)
        except Exception:
            logger.exception("could not read the shared node pool; keeping the current one")
        await anyio.sleep(interval_seconds)

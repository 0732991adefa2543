"""The node pool's shared membership: what the admin API changes and every replica follows.

The ledger database holds it because it is the state every gateway replica already shares
(ARCHITECTURE §8). A registered node is one added through the admin API; a configured node
(``GATEWAY_NODES``) can be drained here but not removed, since each replica's configuration
brings it back.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlmodel import Session

from billing.audit import service as audit
from billing.audit.schemas import Actor
from billing.errors import Conflict, NotFound
from billing.models import PoolNode
from billing.models.types import utcnow
from billing.pool import repository


class PoolNodeState(BaseModel):
    url: str
    registered: bool
    draining: bool


def _state(node: PoolNode) -> PoolNodeState:
    return PoolNodeState(url=node.url, registered=node.registered, draining=node.draining)


def pool_membership(session: Session) -> list[PoolNodeState]:
    return [_state(node) for node in repository.list_pool_nodes(session)]


def register_node(session: Session, url: str, *, actor: Actor) -> PoolNodeState:
    """Add a node to every replica's pool (a node already registered is left as it is)."""
    node = repository.get_pool_node(session, url)
    if node is not None and node.registered:
        return _state(node)
    before = _state(node) if node is not None else None
    node = node or PoolNode(url=url)
    node.registered = True
    node.updated_at = utcnow()
    repository.save_pool_node(session, node)
    audit.record(session, actor, "node.add", "node", url, before=before, after=_state(node))
    return _state(node)


def set_draining(session: Session, url: str, draining: bool, *, actor: Actor) -> PoolNodeState:
    """Drain (no new requests) or undrain a node on every replica."""
    existing = repository.get_pool_node(session, url)
    node = existing or PoolNode(url=url, registered=False)
    before = _state(node)
    if existing is not None and node.draining == draining:
        return before
    node.draining = draining
    node.updated_at = utcnow()
    repository.save_pool_node(session, node)
    action = "node.drain" if draining else "node.undrain"
    audit.record(session, actor, action, "node", url, before=before, after=_state(node))
    return _state(node)


def unregister_node(session: Session, url: str, *, configured: bool, actor: Actor) -> None:
    """Take a registered node out of every replica's pool."""
    if configured:
        raise Conflict(
            f"node {url} comes from GATEWAY_NODES; drain it, or take it out of the configuration"
        )
    node = repository.get_pool_node(session, url)
    if node is None or not node.registered:
        raise NotFound(f"no registered node {url}")
    before = _state(node)
    repository.delete_pool_node(session, node)
    audit.record(session, actor, "node.remove", "node", url, before=before)

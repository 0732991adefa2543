"""Admin: the inference node pool, shared by every gateway replica."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from billing.db import Database
from billing.pool.service import register_node, set_draining, unregister_node
from gateway.admin.auth import AdminClaims, NodesRead, NodesWrite
from gateway.admin.deps import NodeRef, in_transaction
from gateway.deps import DatabaseDep, NodesDep, RequestId
from gateway.nodes.node import NodeSource, NodeStatus, normalize_node_url
from gateway.nodes.pool import NodePool
from gateway.openapi import error_responses

router = APIRouter(
    prefix="/admin/nodes", tags=["admin: nodes"], responses=error_responses(403, 404, 409)
)


# The audit log names a node by its URL (its target column holds 128 characters).
MAX_NODE_URL_LENGTH = 128


class NodeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=MAX_NODE_URL_LENGTH,
        description="The node's base URL, http:// or https://.",
        examples=["http://gpu3:8001"],
    )


@router.get("")
def list_nodes(nodes: NodesDep, _claims: NodesRead) -> list[NodeStatus]:
    """Every node with its health, circuit, drain flag and requests in flight on this replica."""
    return nodes.snapshot()


@router.post("", status_code=status.HTTP_201_CREATED)
def add_node(
    body: NodeCreate,
    nodes: NodesDep,
    database: DatabaseDep,
    claims: NodesWrite,
    request_id: RequestId,
) -> NodeStatus:
    """Register a node with every replica; it takes traffic once its /health/ready answers.
    Its host must be allowed (GATEWAY_NODES' hosts, GATEWAY_NODE_ALLOWED_HOSTS), else 403
    node_not_allowed before anything is stored or contacted."""
    url = normalize_node_url(body.url)
    # Checked before the row is written: a stored URL reaches every replica's pool.
    nodes.allowed_hosts.check(url)
    actor = claims.actor(request_id)
    in_transaction(database, lambda session: register_node(session, url, actor=actor))
    return nodes.add(url)


@router.get("/{node}")
def show_node(node: NodeRef, nodes: NodesDep, _claims: NodesRead) -> NodeStatus:
    """One node, by id or URL."""
    return nodes.status(node)


def set_node_draining(
    node: NodeRef,
    draining: bool,
    nodes: NodePool,
    database: Database,
    claims: AdminClaims,
    request_id: str,
) -> NodeStatus:
    url = nodes.status(node).url
    actor = claims.actor(request_id)
    in_transaction(database, lambda session: set_draining(session, url, draining, actor=actor))
    return nodes.drain(url) if draining else nodes.undrain(url)


@router.post("/{node}/drain")
def drain_node(
    node: NodeRef, nodes: NodesDep, database: DatabaseDep, claims: NodesWrite, request_id: RequestId
) -> NodeStatus:
    """No new requests for the node on any replica; requests in flight finish."""
    return set_node_draining(node, True, nodes, database, claims, request_id)


@router.post("/{node}/undrain")
def undrain_node(
    node: NodeRef, nodes: NodesDep, database: DatabaseDep, claims: NodesWrite, request_id: RequestId
) -> NodeStatus:
    """Let a drained node take requests again."""
    return set_node_draining(node, False, nodes, database, claims, request_id)


@router.delete("/{node}")
def remove_node(
    node: NodeRef, nodes: NodesDep, database: DatabaseDep, claims: NodesWrite, request_id: RequestId
) -> NodeStatus:
    """Take a registered node out of every replica's pool (GATEWAY_NODES' nodes only drain)."""
    found = nodes.status(node)
    actor = claims.actor(request_id)
    # Nodes of GATEWAY_NODES, its URLs or its DNS names' addresses, come back from there.
    configured = found.source is not NodeSource.runtime
    in_transaction(
        database,
        lambda session: unregister_node(session, found.url, configured=configured, actor=actor),
    )
    return nodes.remove(found.url)

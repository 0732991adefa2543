"""Console: inference nodes (health, circuit, drain) and the audit log."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from billing.audit.schemas import AuditQuery
from billing.audit.service import find
from billing.errors import InvalidValue
from gateway.admin.deps import in_transaction
from gateway.admin.nodes import set_node_draining
from gateway.console.deps import AuditPage, NodesPage, NodesWrite
from gateway.console.views import render
from gateway.deps import DatabaseDep, NodesDep, RequestId

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)
AUDIT_PAGE = 100


def parse_moment(value: str) -> datetime | None:
    """A filter's time (``2026-11-30`` or ``2026-11-30T12:00``), read as UTC when it has no zone."""
    if not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidValue(f"{value!r} is not a time like 2026-11-30T12:00") from None


@router.get("/nodes")
def nodes_page(request: Request, nodes: NodesDep, caller: NodesPage) -> Response:
    """Every node with its health, circuit, drain flag and requests in flight."""
    return render(
        request,
        "admin/nodes.html",
        {"nodes": nodes.snapshot(), "can": {scope.value for scope in caller.scopes}},
    )


@router.post("/nodes/{node}/drain")
def drain(
    node: str, nodes: NodesDep, database: DatabaseDep, caller: NodesWrite, request_id: RequestId
) -> Response:
    """No new requests for the node on any replica."""
    set_node_draining(node, True, nodes, database, caller.claims(), request_id)
    return RedirectResponse("/console/nodes?notice=node-drained", status_code=303)


@router.post("/nodes/{node}/undrain")
def undrain(
    node: str, nodes: NodesDep, database: DatabaseDep, caller: NodesWrite, request_id: RequestId
) -> Response:
    """Let a drained node take requests again."""
    set_node_draining(node, False, nodes, database, caller.claims(), request_id)
    return RedirectResponse("/console/nodes?notice=node-undrained", status_code=303)


@router.get("/audit")
def audit_page(
    request: Request,
    database: DatabaseDep,
    _caller: AuditPage,
    actor: str = "",
    action: str = "",
    target_type: str = "",
    target_id: str = "",
    since: str = "",
    until: str = "",
    after_id: int | None = None,
) -> Response:
    """The audit log of admin writes, filtered, a page at a time."""
    query = AuditQuery(
        actor=actor or None,
        action=action or None,
        target_type=target_type or None,
        target_id=target_id or None,
        since=parse_moment(since),
        until=parse_moment(until),
        after_id=after_id,
        limit=AUDIT_PAGE,
    )
    entries = in_transaction(database, lambda session: find(session, query))
    filters = {
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "since": since,
        "until": until,
    }
    next_url = None
    if len(entries) == AUDIT_PAGE:
        following = {name: value for name, value in filters.items() if value}
        next_url = "/console/audit?" + urlencode({**following, "after_id": entries[-1].id})
    return render(
        request, "admin/audit.html", {"entries": entries, "filters": filters, "next_url": next_url}
    )

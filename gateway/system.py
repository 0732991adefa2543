"""Health and model listing."""

from __future__ import annotations

import time

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from billing.db import Database
from gateway.deps import DatabaseDep, ModelsKey, NodesDep, SettingsDep
from gateway.shutdown import Drain

router = APIRouter()
STARTED_AT = int(time.time())


def _database_ok(database: Database) -> bool:
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request, database: DatabaseDep, nodes: NodesDep) -> JSONResponse:
    """The ledger database answers and at least one inference node is ready; 503 "draining"
    from SIGTERM on, so load balancers stop sending before the gateway stops taking requests."""
    drain: Drain = request.app.state.drain
    if drain.draining:
        return JSONResponse(
            status_code=503, content={"status": "draining", "in_flight": drain.in_flight}
        )
    database_ok = await anyio.to_thread.run_sync(_database_ok, database)
    node_ok = await nodes.any_ready()
    status_code = 200 if database_ok and node_ok else 503
    return JSONResponse(
        status_code=status_code,
        content={
            "status": "ready" if status_code == 200 else "not_ready",
            "database": database_ok,
            "nodes": node_ok,
            "in_flight": drain.in_flight,
        },
    )


@router.get("/v1/models")
async def list_models(
    _caller: ModelsKey, nodes: NodesDep, settings: SettingsDep
) -> dict[str, object]:
    """Models the node pool serves (OpenAI list shape)."""
    models = await nodes.list_models()
    return {
        "object": "list",
        "data": [
            {
                "id": model.id,
                "object": "model",
                "created": STARTED_AT,
                "owned_by": "asr-billing-gateway",
                "default": model.id == settings.default_model,
                "languages": model.languages,
            }
            for model in models
        ],
    }

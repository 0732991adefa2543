"""Health and model listing."""

from __future__ import annotations

import time
from typing import Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from billing.db import Database
from gateway.deps import DatabaseDep, ModelsKey, NodesDep, SettingsDep
from gateway.shutdown import Drain

router = APIRouter()
STARTED_AT = int(time.time())


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready", "draining"]
    database: bool | None = None
    nodes: bool | None = None
    in_flight: int


class Model(BaseModel):
    """OpenAI's model object, plus whether it is the default and the languages it speaks."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    default: bool
    languages: list[str]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def _database_ok(database: Database) -> bool:
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@router.get("/health/live")
async def live() -> Liveness:
    """The process is up."""
    return Liveness()


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={503: {"description": "Not ready, or draining.", "model": Readiness}},
)
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
async def list_models(_caller: ModelsKey, nodes: NodesDep, settings: SettingsDep) -> ModelList:
    """Models the node pool serves (OpenAI list shape)."""
    models = await nodes.list_models()
    return ModelList(
        data=[
            Model(
                id=model.id,
                created=STARTED_AT,
                owned_by="asr-billing-gateway",
                default=model.id == settings.default_model,
                languages=model.languages,
            )
            for model in models
        ]
    )

"""``GET /v1/usage``: the caller's own usage."""

from __future__ import annotations

import anyio
from fastapi import APIRouter

from gateway.deps import DatabaseDep, UsageKey
from gateway.usage.schemas import UsageView
from gateway.usage.service import usage_view

router = APIRouter()


@router.get("/v1/usage")
async def my_usage(caller: UsageKey, database: DatabaseDep) -> UsageView:
    """This month's spend per key, remaining quota and prepaid credit of the caller's tenant."""
    return await anyio.to_thread.run_sync(usage_view, database, caller)

"""Every admin route, under ``/admin``."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.admin import audit, billing, keys, nodes, plans, tenants

router = APIRouter()
for module in (tenants, plans, keys, billing, nodes, audit):
    router.include_router(module.router)

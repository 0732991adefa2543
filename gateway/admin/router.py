"""Every admin route, under ``/admin``."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.admin import audit, billing, keys, plans, tenants

router = APIRouter()
for module in (tenants, plans, keys, billing, audit):
    router.include_router(module.router)

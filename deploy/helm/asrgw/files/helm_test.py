"""`helm test`: the gateway Service answers /health/ready, and /v1/models lists the nodes' models.

Runs in the gateway image. /v1/models needs an API key: ASRGW_API_KEY when given, else a key of
the tenant "helm-test" made through the admin API with a token minted from
GATEWAY_ADMIN_JWT_SECRET, and revoked before the test ends. Exits 1 on any failure.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx

from gateway.admin.auth import Scope, mint_token
from gateway.config import GatewaySettings

TENANT = "helm-test"


def check(condition: bool, message: str) -> None:
    if not condition:
        print(f"FAIL {message}")
        sys.exit(1)
    print(f"ok   {message}")


def admin_headers() -> dict[str, str]:
    settings = GatewaySettings()
    scopes = [Scope.tenants_read, Scope.tenants_write, Scope.keys_write]
    token = mint_token(settings, "helm-test", scopes, ttl_seconds=300)
    return {"Authorization": f"Bearer {token}"}


def new_key(client: httpx.Client, admin: dict[str, str]) -> dict[str, Any]:
    tenant = client.post("/admin/tenants", json={"name": TENANT}, headers=admin)
    check(tenant.status_code in (201, 409), f"tenant {TENANT} exists (HTTP {tenant.status_code})")
    key = {"tenant": TENANT, "name": "helm test", "expires_in_days": 1, "scopes": ["models:read"]}
    created = client.post("/admin/keys", json=key, headers=admin)
    check(created.status_code == 201, f"a key for {TENANT} (HTTP {created.status_code})")
    body: dict[str, Any] = created.json()
    return body


def main() -> None:
    base_url = os.environ["ASRGW_BASE_URL"]
    with httpx.Client(base_url=base_url, timeout=30) as client:
        ready = client.get("/health/ready")
        check(ready.status_code == 200, f"GET /health/ready: {ready.status_code} {ready.text}")

        created: dict[str, Any] | None = None
        admin: dict[str, str] = {}
        key = os.environ.get("ASRGW_API_KEY", "")
        if not key:
            admin = admin_headers()
            created = new_key(client, admin)
            key = created["secret"]
        try:
            models = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            check(models.status_code == 200, f"GET /v1/models: {models.status_code}")
            names = [model["id"] for model in models.json()["data"]]
            check(bool(names), f"the nodes serve {', '.join(names) or 'no model'}")
        finally:
            if created is not None:
                prefix = created["key"]["prefix"]
                revoked = client.post(f"/admin/keys/{prefix}/revoke", headers=admin)
                status = revoked.status_code
                check(status == 200, f"the test key revoked (HTTP {status})")


if __name__ == "__main__":
    main()

"""Key lifecycle at the gateway: scopes and models per key, rotation with a grace period and
revocation reaching every replica within seconds."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import httpx

from billing.db import Database
from billing.keys.schemas import AuthenticatedKey, KeyScope, PlanTerms
from billing.keys.service import create_api_key
from billing.models.types import utcnow
from billing.tenants.service import create_tenant
from billing.tokens import TokenUnit
from gateway.keycache import KeyCache
from tests.fixtures.factories import TEST_ACTOR, usage_rows
from tests.fixtures.processes import free_port, running
from tests.gateway.admin_client import ADMIN_SECRET, admin_client, admin_settings, bearer, token

WAV_HEADER_ONLY = b"RIFF\x24\x00\x00\x00WAVEfmt "


def make_key(database: Database, **options: object) -> str:
    with database.transaction() as session:
        create_tenant(session, "acme", actor=TEST_ACTOR)
        return create_api_key(session, "acme", actor=TEST_ACTOR, **options).secret  # type: ignore[arg-type]


class TestScopesAndModels:
    def test_a_key_is_held_to_its_scopes(self, database: Database) -> None:
        secret = make_key(database, scopes=[KeyScope.usage_read])
        with admin_client(database, admin_settings()) as client:
            usage = client.get("/v1/usage", headers=bearer(secret))
            models = client.get("/v1/models", headers=bearer(secret))
            transcription = client.post(
                "/v1/audio/transcriptions",
                headers=bearer(secret),
                files={"file": ("a.wav", WAV_HEADER_ONLY, "audio/wav")},
                data={"model": "whisper-1"},
            )
        assert usage.status_code == 200
        for refused, scope in ((models, "models:read"), (transcription, "audio:transcribe")):
            assert refused.status_code == 403
            error = refused.json()["error"]
            assert error["code"] == "permission_denied"
            assert scope in error["message"]

    def test_a_model_outside_the_key_is_refused_before_anything_is_reserved(
        self, database: Database
    ) -> None:
        secret = make_key(database, allowed_models=["paraformer-zh"])
        with admin_client(database, admin_settings()) as client:
            response = client.post(
                "/v1/audio/transcriptions",
                headers=bearer(secret),
                files={"file": ("a.wav", WAV_HEADER_ONLY, "audio/wav")},
                data={"model": "whisper-1"},  # the default model, pocketsphinx-en
            )
        assert response.status_code == 403
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("permission_denied", "model")
        assert "pocketsphinx-en" in error["message"]
        assert usage_rows(database) == []


def caller(expires_at: object = None) -> AuthenticatedKey:
    terms = PlanTerms(
        name="p", price_per_1k_tokens_micros=1, token_unit=TokenUnit.char, currency="USD"
    )
    return AuthenticatedKey(
        key_id=1,
        key_prefix="abc",
        tenant_id=1,
        tenant_name="t",
        plan=terms,
        expires_at=expires_at,  # type: ignore[arg-type]
    )


class TestKeyCache:
    def test_entries_live_at_most_the_ttl_and_never_past_the_key_expiry(self) -> None:
        now = [100.0]
        cache = KeyCache(2.0, max_entries=2, clock=lambda: now[0])
        cache.put("sk-a", caller())
        cache.put("sk-b", caller(expires_at=utcnow() - timedelta(seconds=1)))
        assert cache.get("sk-a") is not None
        assert cache.get("sk-b") is None  # the key itself has expired
        now[0] += 2.0
        assert cache.get("sk-a") is None
        cache.put("sk-1", caller())
        cache.put("sk-2", caller())
        cache.put("sk-3", caller())
        assert cache.get("sk-1") is None  # bounded: the least recently used went first
        assert cache.get("sk-3") is not None
        assert KeyCache(0).get("sk-a") is None


def wait_for_status(url: str, secret: str, status: int, timeout: float) -> float:
    """Seconds until ``GET url`` with ``secret`` answers ``status``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if httpx.get(url, headers=bearer(secret), timeout=5).status_code == status:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered {status} within {timeout}s")


class TestAcrossReplicas:
    def test_rotation_grace_and_revocation_reach_both_gateways(
        self, database: Database, tmp_path: Path
    ) -> None:
        old_secret = make_key(database)
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        environment = {
            "BILLING_DATABASE_URL": database.url,
            "GATEWAY_NODES": f"http://127.0.0.1:{free_port()}",  # no node needed here
            "GATEWAY_ADMIN_JWT_SECRET": ADMIN_SECRET,
            "GATEWAY_KEY_CACHE_SECONDS": "2",
        }
        admin = bearer(token(admin_settings()))
        with (
            running(["gateway", "--port", str(ports[0])], environment, f"{urls[0]}/health/live",
                    tmp_path / "gateway-a.log"),
            running(["gateway", "--port", str(ports[1])], environment, f"{urls[1]}/health/live",
                    tmp_path / "gateway-b.log"),
        ):  # fmt: skip
            for url in urls:  # both replicas now hold the old key in their caches
                assert httpx.get(f"{url}/v1/usage", headers=bearer(old_secret)).status_code == 200
            prefix = old_secret.removeprefix("sk-asrgw-").split("_")[0]
            # A grace long enough for the checks below to run inside it on a loaded machine.
            rotated = httpx.post(
                f"{urls[0]}/admin/keys/{prefix}/rotate", json={"grace_seconds": 10}, headers=admin
            )
            rotated_at = time.monotonic()
            assert rotated.status_code == 201, rotated.text
            new_secret = rotated.json()["new"]["secret"]
            for url in urls:  # during the grace period both keys work everywhere
                for secret in (old_secret, new_secret):
                    assert httpx.get(f"{url}/v1/usage", headers=bearer(secret)).status_code == 200
            assert time.monotonic() - rotated_at < 10, "the checks did not run inside the grace"
            # After the grace period (10 s) plus at most the key cache (2 s), the old key is
            # dead on both replicas (the bound leaves a loaded machine 8 s more).
            for url in urls:
                wait_for_status(f"{url}/v1/usage", old_secret, 401, timeout=30)
            assert time.monotonic() - rotated_at < 10 + 2 + 8
            expired = httpx.get(f"{urls[1]}/v1/usage", headers=bearer(old_secret))
            assert "expired" in expired.json()["error"]["message"]

            new_prefix = rotated.json()["new"]["key"]["prefix"]
            revoked_at = time.monotonic()
            revoked = httpx.post(f"{urls[0]}/admin/keys/{new_prefix}/revoke", headers=admin)
            assert revoked.status_code == 200
            # Revocation through replica A reaches replica B once B's key cache (2 s) lapses
            # (the bound leaves a loaded machine 8 s more).
            wait_for_status(f"{urls[1]}/v1/usage", new_secret, 401, timeout=30)
            assert time.monotonic() - revoked_at < 2 + 8
            assert (
                "revoked"
                in httpx.get(f"{urls[1]}/v1/usage", headers=bearer(new_secret)).json()["error"][
                    "message"
                ]
            )

"""A ledger that cannot take a write answers 503 ``ledger_unavailable`` with ``Retry-After``,
never a 500, and bills nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from billing.config import BillingSettings
from billing.db import Database
from billing.migrate import upgrade_to_head
from gateway.app import create_app
from tests.fixtures.factories import create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port
from tests.gateway.conftest import gateway_settings
from tests.gateway.jobs.conftest import FAKE_NODE, FakeNode


def post(client: TestClient, key: str, audio: bytes) -> httpx.Response:
    return client.post(
        "/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("speech.wav", audio, "audio/wav")},
        data={"model": "whisper-1"},
    )


class TestBusySqlite:
    def test_a_locked_database_is_503_then_serves_again(
        self, tmp_path: Path, weather_wav: Path
    ) -> None:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        upgrade_to_head(url)
        database = Database(url)
        key = create_tenant_with_key(database, "acme")
        settings = gateway_settings(
            FAKE_NODE, cache_enabled=False, job_workers=0, job_storage_dir=str(tmp_path / "j")
        )
        billing = BillingSettings(database_url=url, sqlite_busy_timeout_seconds=0.2)
        node = FakeNode()
        audio = weather_wav.read_bytes()
        other_writer = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        try:
            with TestClient(create_app(settings, billing, transport=node.transport)) as client:
                other_writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
                busy = post(client, key, audio)
                other_writer.execute("ROLLBACK")
                served = post(client, key, audio)
        finally:
            other_writer.close()
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "ledger_unavailable"
        assert busy.headers["retry-after"] == "1"
        assert served.status_code == 200
        assert len(usage_rows(database)) == 1
        database.dispose()


class TestUnreachablePostgres:
    def test_an_unreachable_ledger_is_503_not_500(self, tmp_path: Path, weather_wav: Path) -> None:
        # Nothing listens on this port: every ledger connection is refused.
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
        settings = gateway_settings(
            FAKE_NODE,
            cache_enabled=False,
            job_workers=0,
            migrate_on_start=False,
            job_storage_dir=str(tmp_path / "j"),
        )
        node = FakeNode()
        app = create_app(settings, BillingSettings(database_url=url), transport=node.transport)
        with TestClient(app) as client:
            response = client.post(
                "/v1/audio/transcriptions",
                headers={"Authorization": "Bearer sk-asrgw-000000000000_unknown"},
                files={"file": ("speech.wav", weather_wav.read_bytes(), "audio/wav")},
                data={"model": "whisper-1"},
            )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "ledger_unavailable"
        assert response.headers["retry-after"] == "1"
        assert node.transcriptions == 0

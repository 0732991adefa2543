"""The MD5 result cache: per tenant, keyed by every transcript-changing parameter, rendered in
any format, billed at the plan's cache-hit price and always recorded in the ledger as cached."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from billing.config import BillingSettings
from billing.db import Database
from billing.models import Reservation
from billing.models.types import utcnow
from billing.periods import billing_period
from billing.reconcile.service import Finding, reconcile
from gateway import metrics
from gateway.app import create_app
from gateway.cache import keys
from gateway.cache.keys import audio_md5_digest, md5_digest, result_cache_key
from gateway.cache.store import MemoryResultStore, RedisResultStore
from gateway.config import GatewaySettings
from inference.protocol import TranscribeParams
from tests.fixtures.factories import account, create_tenant_with_key, usage_rows
from tests.fixtures.processes import free_port
from tests.fixtures.redis import delete_prefixed, shared_redis_url, unique_prefix
from tests.gateway.conftest import gateway_settings


def transcribe(client: TestClient, key: str, audio: bytes, **fields: str) -> httpx.Response:
    return client.post(
        "/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("speech.wav", audio, "audio/wav")},
        data={"model": "whisper-1", **fields},
    )


@pytest.fixture
def two_tenants(database: Database) -> tuple[str, str]:
    acme = create_tenant_with_key(
        database, "acme", price_per_1k_tokens_micros=20_000, cache_hit_price_bp=2_500
    )
    globex = create_tenant_with_key(database, "globex", price_per_1k_tokens_micros=20_000)
    return acme, globex


def reconcile_now(database: Database) -> list[Finding]:
    with database.transaction() as session:
        return reconcile(session, billing_period(utcnow()))


def app_for(database: Database, settings: GatewaySettings) -> TestClient:
    return TestClient(create_app(settings, BillingSettings(database_url=database.url)))


class TestPerTenantCache:
    def test_another_tenant_misses_and_a_repeat_hits(
        self, node_url: str, database: Database, two_tenants: tuple[str, str], weather_wav: Path
    ) -> None:
        acme, globex = two_tenants
        audio = weather_wav.read_bytes()
        with app_for(database, gateway_settings(node_url)) as client:
            first = transcribe(client, acme, audio)
            other_tenant = transcribe(client, globex, audio)
            repeat = transcribe(client, acme, audio)
        assert [r.headers["x-cache"] for r in (first, other_tenant, repeat)] == [
            "miss",
            "miss",
            "hit",
        ]
        assert repeat.json()["text"] == first.json()["text"]
        rows = usage_rows(database)
        assert [(row.cached, row.billed_tokens) for row in rows] == [
            (False, first.json()["usage"]["output_tokens"]),
            (False, first.json()["usage"]["output_tokens"]),
            (True, first.json()["usage"]["output_tokens"]),
        ]
        # acme pays a quarter of its price for a hit, rounded half up once; the header says so.
        full = rows[0].cost_micros
        assert rows[2].price_per_1k_tokens_micros == 5_000
        assert rows[2].cost_micros == (rows[2].billed_tokens * 5_000 + 500) // 1_000
        assert rows[2].cost_micros < full
        assert int(repeat.headers["x-billing-cost-micros"]) == rows[2].cost_micros
        assert repeat.json()["usage"]["cost_micros"] == rows[2].cost_micros

    def test_a_cached_srt_answers_a_json_request_and_parameters_split_entries(
        self, node_url: str, database: Database, two_tenants: tuple[str, str], weather_wav: Path
    ) -> None:
        acme, _ = two_tenants
        audio = weather_wav.read_bytes()
        with app_for(database, gateway_settings(node_url)) as client:
            srt = transcribe(client, acme, audio, response_format="srt")
            as_json = transcribe(client, acme, audio, response_format="json")
            as_text = transcribe(client, acme, audio, response_format="text")
            other_language = transcribe(client, acme, audio, language="en")
            with_prompt = transcribe(client, acme, audio, prompt="weather")
            warmer = transcribe(client, acme, audio, temperature="0.6")
            warmer_again = transcribe(client, acme, audio, temperature="0.6")
        assert srt.headers["x-cache"] == "miss"
        assert "-->" in srt.text
        assert (as_json.headers["x-cache"], as_text.headers["x-cache"]) == ("hit", "hit")
        assert as_text.text.strip() == as_json.json()["text"]
        assert other_language.headers["x-cache"] == "miss"
        assert with_prompt.headers["x-cache"] == "miss"
        # temperature changes the transcript, so it splits entries; 0 and absent are the same.
        assert (warmer.headers["x-cache"], warmer_again.headers["x-cache"]) == ("miss", "hit")
        assert [row.cached for row in usage_rows(database)] == [
            False,
            True,
            True,
            False,
            False,
            False,
            True,
        ]

    def test_global_mode_shares_results_across_tenants(
        self, node_url: str, database: Database, two_tenants: tuple[str, str], weather_wav: Path
    ) -> None:
        acme, globex = two_tenants
        audio = weather_wav.read_bytes()
        settings = gateway_settings(node_url, cache_scope="global")
        with app_for(database, settings) as client:
            first = transcribe(client, acme, audio)
            shared = transcribe(client, globex, audio)
        assert (first.headers["x-cache"], shared.headers["x-cache"]) == ("miss", "hit")
        hit_row = usage_rows(database)[1]
        assert hit_row.cached
        assert hit_row.cost_micros == 0  # globex's plan: hits are free

    def test_a_free_hit_needs_no_credit_left(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        # One request's worst case (3 tokens for 2.1 s at 1 token a second) is all the credit.
        key = create_tenant_with_key(
            database,
            "prepaid",
            prepaid=True,
            credit_micros=60,
            price_per_1k_tokens_micros=20_000,
            max_tokens_per_audio_second=1,
        )
        audio = weather_wav.read_bytes()
        with app_for(database, gateway_settings(node_url)) as client:
            first = transcribe(client, key, audio)
            hit = transcribe(client, key, audio)
            fresh = transcribe(client, key, audio, language="en")  # a miss: needs credit
        assert first.status_code == 200
        assert int(first.headers["x-billing-cost-micros"]) == 60
        assert (hit.status_code, hit.headers["x-cache"]) == (200, "hit")
        assert int(hit.headers["x-billing-cost-micros"]) == 0
        assert fresh.status_code == 402
        assert [(row.cached, row.cost_micros) for row in usage_rows(database)] == [
            (False, 60),
            (True, 0),
        ]

    def test_a_hit_is_charged_without_a_reservation(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        key = create_tenant_with_key(
            database, "acme", prepaid=True, credit_micros=10_000, cache_hit_price_bp=5_000
        )
        audio = weather_wav.read_bytes()
        with app_for(database, gateway_settings(node_url)) as client:
            miss = transcribe(client, key, audio)
            hit = transcribe(client, key, audio)
        assert hit.headers["x-cache"] == "hit"
        cost = int(hit.headers["x-billing-cost-micros"])
        assert cost * 2 in (int(miss.headers["x-billing-cost-micros"]) + d for d in (-1, 0, 1))
        with database.transaction() as session:
            held = session.exec(select(Reservation)).all()
        # Only the miss was held; the hit was checked and charged in one statement.
        assert [row.request_id for row in held] == [miss.headers["x-billing-request-id"]]
        rows = usage_rows(database)
        assert [(row.cached, row.cost_micros) for row in rows][1] == (True, cost)
        totals = account(database, "acme")
        assert totals.spent_micros == sum(row.cost_micros for row in rows)
        assert totals.reserved_micros == 0
        findings = reconcile_now(database)
        assert [f for f in findings if not f.ok] == []

    def test_a_paid_hit_past_the_credit_is_refused_and_writes_nothing(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        # The miss spends all the credit; a hit at half price no longer fits.
        key = create_tenant_with_key(
            database,
            "acme",
            prepaid=True,
            credit_micros=60,
            max_tokens_per_audio_second=1,
            cache_hit_price_bp=5_000,
        )
        audio = weather_wav.read_bytes()
        with app_for(database, gateway_settings(node_url)) as client:
            miss = transcribe(client, key, audio)
            hit = transcribe(client, key, audio)
        assert miss.status_code == 200
        assert hit.status_code == 402
        assert hit.json()["error"]["code"] == "insufficient_quota"
        assert len(usage_rows(database)) == 1
        assert account(database, "acme").available_micros == 0

    def test_hits_count_towards_the_monthly_quota(
        self, node_url: str, database: Database, weather_wav: Path
    ) -> None:
        # 3 tokens a request (2.1 s at 1 token a second); a quota of 6 holds two of them.
        key = create_tenant_with_key(
            database, "acme", monthly_token_quota=6, max_tokens_per_audio_second=1
        )
        audio = weather_wav.read_bytes()
        with app_for(database, gateway_settings(node_url)) as client:
            statuses = [transcribe(client, key, audio).status_code for _ in range(3)]
        assert statuses == [200, 200, 402]
        assert [row.cached for row in usage_rows(database)] == [False, True]
        assert [f for f in reconcile_now(database) if not f.ok] == []

    def test_off_means_every_request_goes_to_a_node(
        self, node_url: str, database: Database, two_tenants: tuple[str, str], weather_wav: Path
    ) -> None:
        acme, _ = two_tenants
        audio = weather_wav.read_bytes()
        with app_for(database, gateway_settings(node_url, cache_enabled=False)) as client:
            responses = [transcribe(client, acme, audio) for _ in range(2)]
        assert [r.headers["x-cache"] for r in responses] == ["miss", "miss"]
        assert [row.cached for row in usage_rows(database)] == [False, False]


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    url = shared_redis_url()
    prefix = unique_prefix()
    yield url, prefix
    delete_prefixed(url, prefix)


class TestSharedCache:
    def test_a_replica_answers_from_redis_what_another_transcribed_even_with_no_node(
        self,
        node_url: str,
        database: Database,
        two_tenants: tuple[str, str],
        weather_wav: Path,
        redis_prefix: tuple[str, str],
    ) -> None:
        url, prefix = redis_prefix
        acme, globex = two_tenants
        audio = weather_wav.read_bytes()
        shared = {"redis_url": url, "rate_limit_key_prefix": prefix}
        with app_for(database, gateway_settings(node_url, **shared)) as replica_a:
            first = transcribe(replica_a, acme, audio)
        dead_node = f"http://127.0.0.1:{free_port()}"
        with app_for(database, gateway_settings(dead_node, **shared)) as replica_b:
            hit = transcribe(replica_b, acme, audio)
            other_tenant = transcribe(replica_b, globex, audio)
        assert first.headers["x-cache"] == "miss"
        assert hit.status_code == 200
        assert hit.headers["x-cache"] == "hit"
        assert hit.json()["text"] == first.json()["text"]
        # globex never sent this audio: a miss, and with no node it is 503 and unbilled.
        assert other_tenant.status_code == 503
        assert [(row.tenant_id, row.cached) for row in usage_rows(database)] == [
            (usage_rows(database)[0].tenant_id, False),
            (usage_rows(database)[0].tenant_id, True),
        ]

    def test_an_unreachable_redis_is_a_miss_not_a_failure(
        self, node_url: str, database: Database, two_tenants: tuple[str, str], weather_wav: Path
    ) -> None:
        acme, _ = two_tenants
        before = metrics.CACHE_ERRORS.labels(operation="get")._value.get()
        settings = gateway_settings(
            node_url,
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            rate_limit_on_store_error="open",
        )
        with app_for(database, settings) as client:
            responses = [transcribe(client, acme, weather_wav.read_bytes()) for _ in range(2)]
        assert [r.status_code for r in responses] == [200, 200]
        assert [r.headers["x-cache"] for r in responses] == ["miss", "miss"]
        assert metrics.CACHE_ERRORS.labels(operation="get")._value.get() >= before + 2


class TestStores:
    def test_memory_store_is_bounded_by_bytes_and_expires(self) -> None:
        now = [0.0]
        store = MemoryResultStore(max_bytes=10, ttl_seconds=60, clock=lambda: now[0])

        async def scenario() -> list[Any]:
            await store.put("a", b"12345")
            await store.put("b", b"12345")
            await store.get("a")  # a is now the most recently used
            await store.put("c", b"123")  # over 10 bytes: b goes
            seen = [await store.get(key) for key in ("a", "b", "c")]
            await store.put("huge", b"x" * 11)  # larger than the whole cache: not kept
            seen.append(await store.get("huge"))
            now[0] = 61
            seen.append(await store.get("a"))
            return seen

        assert asyncio.run(scenario()) == [b"12345", None, b"123", None, None]
        assert store.size_bytes == 3

    def test_redis_store_round_trip_and_expiry(self, redis_prefix: tuple[str, str]) -> None:
        from redis.asyncio import Redis

        url, prefix = redis_prefix

        async def scenario() -> tuple[list[bytes | None], int]:
            client = Redis.from_url(url)
            try:
                store = RedisResultStore(client, prefix, ttl_seconds=60)
                await store.put("k", b"value")
                seen = [await store.get("k"), await store.get("other")]
                # Redis keeps the entry for the store's TTL; once that lapses (made to lapse
                # now, rather than waited for), the entry is gone.
                expires_in_ms = await client.pttl(f"{prefix}:result:k")
                await client.pexpireat(f"{prefix}:result:k", 1)
                seen.append(await store.get("k"))
                return seen, expires_in_ms
            finally:
                await client.aclose()

        seen, expires_in_ms = asyncio.run(scenario())
        assert seen == [b"value", None, None]
        assert 0 < expires_in_ms <= 60_000

    def test_keys_separate_tenants_and_parameters_but_not_formats(self) -> None:
        md5 = md5_digest(b"audio").hex()
        params = TranscribeParams(model="m", language="auto")
        assert result_cache_key(1, md5, params) != result_cache_key(2, md5, params)
        assert result_cache_key(None, md5, params) not in {
            result_cache_key(1, md5, params),
            result_cache_key(2, md5, params),
        }
        for changed in (
            params.model_copy(update={"language": "en"}),
            params.model_copy(update={"hotwords": "x"}),
            params.model_copy(update={"word_timestamps": True}),
            params.model_copy(update={"model": "n"}),
            params.model_copy(update={"temperature": 0.4}),
        ):
            assert result_cache_key(1, md5, changed) != result_cache_key(1, md5, params)
        other = md5_digest(b"other").hex()
        assert result_cache_key(1, other, params) != result_cache_key(1, md5, params)


class TestLargeUploadDigest:
    """A large upload is hashed on a worker thread, so the event loop goes on serving other
    requests meanwhile; the digest, and so every cache key and Idempotency-Key fingerprint, is the
    same whichever way it was computed."""

    def test_a_large_upload_is_hashed_off_the_event_loop_to_the_same_digest(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        hashed_on: list[threading.Thread] = []
        real = keys.md5_digest

        def recording(audio: bytes) -> bytes:
            hashed_on.append(threading.current_thread())
            return real(audio)

        monkeypatch.setattr(keys, "md5_digest", recording)
        small = b"s" * (keys.THREAD_MD5_BYTES - 1)
        large = b"l" * keys.THREAD_MD5_BYTES

        async def digests() -> tuple[bytes, bytes, threading.Thread]:
            return (
                await audio_md5_digest(small),
                await audio_md5_digest(large),
                threading.current_thread(),
            )

        small_digest, large_digest, loop_thread = asyncio.run(digests())
        assert small_digest == hashlib.md5(small).digest()
        assert large_digest == hashlib.md5(large).digest()
        assert hashed_on[0] is loop_thread
        assert hashed_on[1] is not loop_thread

    def test_hits_and_idempotent_replays_match_across_the_two_ways(
        self,
        node_url: str,
        database: Database,
        two_tenants: tuple[str, str],
        weather_wav: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        acme, _ = two_tenants
        audio = weather_wav.read_bytes()
        assert len(audio) < keys.THREAD_MD5_BYTES

        def keyed(client: TestClient, upload: bytes) -> httpx.Response:
            return client.post(
                "/v1/audio/transcriptions",
                headers={"Authorization": f"Bearer {acme}", "Idempotency-Key": "k-1"},
                files={"file": ("speech.wav", upload, "audio/wav")},
                data={"model": "whisper-1", "language": "en"},
            )

        with app_for(database, gateway_settings(node_url)) as client:
            inline = transcribe(client, acme, audio)
            first = keyed(client, audio)
            # Every upload now counts as large: hashed on a worker thread.
            monkeypatch.setattr(keys, "THREAD_MD5_BYTES", 0)
            threaded = transcribe(client, acme, audio)
            retried = keyed(client, audio)
            changed = keyed(client, audio + b"\0")
        assert (inline.headers["x-cache"], threaded.headers["x-cache"]) == ("miss", "hit")
        assert threaded.json()["text"] == inline.json()["text"]
        assert first.status_code == retried.status_code == 200
        assert retried.headers["idempotent-replayed"] == "true"
        assert retried.json() == first.json()
        # The same key with other audio is another request: refused, not replayed.
        assert changed.status_code == 409, changed.text
        assert changed.json()["error"]["code"] == "idempotency_key_reused"
        assert [row.cached for row in usage_rows(database)] == [False, False, True]

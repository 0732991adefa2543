from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from billing.db import Database
from billing.keys.service import authenticate
from billing.usage.schemas import BillableTranscription
from billing.usage.service import record_transcription, usage_per_key
from tests.fixtures.factories import create_tenant_with_key, usage_rows


class TestLedger:
    def test_row_snapshots_the_plan_and_counts_tokens(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", price_per_1k_tokens_micros=7_777)
        with database.transaction() as session:
            caller = authenticate(session, secret)
            charge = record_transcription(
                session,
                BillableTranscription(
                    request_id="req_1",
                    caller=caller,
                    model="pocketsphinx-en",
                    audio_ms=2_500,
                    transcript="the weather is nice today",
                ),
            )
        (row,) = usage_rows(database)
        assert row.output_tokens == charge.output_tokens == 21
        assert row.cost_micros == charge.cost_micros == (21 * 7_777 + 500) // 1000
        assert (row.token_unit, row.price_per_1k_tokens_micros) == ("char", 7_777)
        assert (row.audio_ms, row.cached, row.model) == (2_500, False, "pocketsphinx-en")

    def test_one_row_per_request_id(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme")
        billable_kwargs = {"request_id": "req_same", "model": "m", "audio_ms": 1, "transcript": "x"}
        with database.transaction() as session:
            caller = authenticate(session, secret)
            record_transcription(session, BillableTranscription(caller=caller, **billable_kwargs))
        with pytest.raises(IntegrityError), database.transaction() as session:
            record_transcription(session, BillableTranscription(caller=caller, **billable_kwargs))
        assert len(usage_rows(database)) == 1

    def test_usage_per_key_sums_rows(self, database: Database) -> None:
        secret = create_tenant_with_key(database, "acme", token_unit="word")
        create_tenant_with_key(database, "idle")
        with database.transaction() as session:
            caller = authenticate(session, secret)
            for index, text in enumerate(["one two", "three four five"]):
                record_transcription(
                    session,
                    BillableTranscription(
                        request_id=f"req_{index}",
                        caller=caller,
                        model="m",
                        audio_ms=1_000,
                        transcript=text,
                    ),
                )
        with database.transaction() as session:
            summaries = {summary.tenant: summary for summary in usage_per_key(session)}
        assert summaries["acme"].requests == 2
        assert summaries["acme"].output_tokens == 5
        assert summaries["acme"].audio_ms == 2_000
        assert summaries["acme"].cost_micros == sum(row.cost_micros for row in usage_rows(database))
        assert (summaries["idle"].requests, summaries["idle"].cost_micros) == (0, 0)

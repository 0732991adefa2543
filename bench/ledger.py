"""Ledger throughput: reserve + settle (one usage row each) per second, on SQLite and PostgreSQL,
with 1 and 8 concurrent writers, all on one tenant (the worst case: every writer needs the same
account row lock) and each on its own tenant (a pool serving many customers).

    python bench/ledger.py                          # SQLite file, and PostgreSQL from DATABASE_URL
    python bench/ledger.py --seconds 5 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from billing.db import Database  # noqa: E402
from billing.keys.service import authenticate  # noqa: E402
from billing.migrate import upgrade_to_head  # noqa: E402
from billing.reservations.service import reserve, settle  # noqa: E402
from billing.usage.schemas import BillableTranscription  # noqa: E402
from tests.fixtures.factories import create_tenant_with_key  # noqa: E402

TRANSCRIPT = "the weather is nice today please call me tomorrow morning"


def settle_loop(database: Database, secret: str, stop: threading.Event, counts: list[int]) -> None:
    with database.transaction() as session:
        caller = authenticate(session, secret)
    done = 0
    while not stop.is_set():
        request_id = f"req_{uuid.uuid4().hex}"
        with database.transaction() as session:
            reserve(session, request_id, caller, 5_000, ttl=timedelta(minutes=10))
        with database.transaction() as session:
            settle(
                session,
                BillableTranscription(
                    request_id=request_id,
                    caller=caller,
                    model="bench",
                    audio_ms=5_000,
                    transcript=TRANSCRIPT,
                ),
            )
        done += 1
    counts.append(done)


def measure(url: str, writers: int, seconds: float, *, shared_tenant: bool) -> float:
    upgrade_to_head(url)
    database = Database(url)
    secrets = [
        create_tenant_with_key(
            database,
            f"bench-{uuid.uuid4().hex[:8]}",
            prepaid=True,
            credit_micros=10**15,
            max_tokens_per_audio_second=50,
        )
        for _ in range(1 if shared_tenant else writers)
    ]
    stop = threading.Event()
    counts: list[int] = []
    threads = [
        threading.Thread(
            target=settle_loop, args=(database, secrets[index % len(secrets)], stop, counts)
        )
        for index in range(writers)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    database.dispose()
    return sum(counts) / elapsed


def postgres_schema_url(base: str) -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def drop_schema(base: str, schema: str) -> None:
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--writers", default="1,8")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args()
    writer_counts = [int(value) for value in options.writers.split(",")]
    rows: list[tuple[str, str, int, float]] = []
    layouts = [("one tenant", True), ("a tenant per writer", False)]
    with tempfile.TemporaryDirectory() as scratch:
        for layout, shared in layouts:
            for writers in writer_counts:
                if writers == 1 and not shared:
                    continue
                url = f"sqlite:///{scratch}/ledger-{layout[0]}-{writers}.db"
                rate = measure(url, writers, options.seconds, shared_tenant=shared)
                rows.append(("SQLite (file, WAL)", layout, writers, rate))
                print(f"  SQLite      {layout:<20} writers={writers:<2} {rate:8.0f}/s", flush=True)
    base = os.environ.get("DATABASE_URL", "")
    if base:
        base = base.replace("postgresql://", "postgresql+psycopg://", 1)
        for layout, shared in layouts:
            for writers in writer_counts:
                if writers == 1 and not shared:
                    continue
                url, schema = postgres_schema_url(base)
                try:
                    rate = measure(url, writers, options.seconds, shared_tenant=shared)
                finally:
                    drop_schema(base, schema)
                rows.append(("PostgreSQL", layout, writers, rate))
                print(f"  PostgreSQL  {layout:<20} writers={writers:<2} {rate:8.0f}/s", flush=True)
    table = "\n".join(
        ["| database | tenants | writers | settlements/s |", "|---|---|---|---|"]
        + [
            f"| {name} | {layout} | {writers} | {rate:.0f} |"
            for name, layout, writers, rate in rows
        ]
    )
    report = (
        f"### Ledger settle throughput, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"One settlement = reserve (account row lock, reservation insert) + settle (usage row "
        f"insert, account and period update, reservation close), two transactions. "
        f"{os.cpu_count()} cores; client and database on the same machine. "
        f"Command: `python bench/ledger.py {' '.join(sys.argv[1:])}`.\n\n{table}\n"
    )
    print()
    print(report)
    if not options.no_write:
        with options.out.open("a") as output:
            output.write("\n" + report)


if __name__ == "__main__":
    main()

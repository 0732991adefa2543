"""Money through crashes, at any size: the rig of ``tests/e2e/test_crash_billing.py``
(gateways on one PostgreSQL ledger and one Redis, SIGKILLed in turn every 2-3 s, clients
retrying with ``Idempotency-Key``), with its counts printed and appended to docs/benchmarks.md.

    python bench/crash.py --requests 600
    python bench/crash.py --database-url postgresql+psycopg://postgres@127.0.0.1/test --no-write

Needs PostgreSQL (``--database-url`` or ``DATABASE_URL``; a schema of its own, dropped after)
and Redis (``--redis-url`` or ``REDIS_URL``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import select  # noqa: E402

from bench.record import record  # noqa: E402
from billing.db import Database  # noqa: E402
from billing.migrate import upgrade_to_head  # noqa: E402
from billing.models import IdempotencyRecord, UsageEvent  # noqa: E402
from billing.models.types import utcnow  # noqa: E402
from billing.periods import billing_period  # noqa: E402
from tests.e2e.crash_harness import reconcile, run_crashes  # noqa: E402
from tests.fixtures.factories import account, create_tenant_with_key  # noqa: E402
from tests.fixtures.redis import delete_prefixed  # noqa: E402

CREDIT_MICROS = 1_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--gateways", type=int, default=3, help="gateways killed in turn")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--no-write", action="store_true", help="print only")
    options = parser.parse_args()
    if not options.database_url or not options.redis_url:
        parser.error("PostgreSQL and Redis are needed: --database-url and --redis-url")
    base = make_url(options.database_url).set(drivername="postgresql+psycopg")
    schema = f"crash_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    database_url = url.render_as_string(hide_password=False)
    prefix = f"asrgw-crash-{uuid.uuid4().hex[:8]}"
    try:
        upgrade_to_head(database_url)
        database = Database(database_url)
        api_key = create_tenant_with_key(
            database, "acme", prepaid=True, credit_micros=CREDIT_MICROS
        )
        with tempfile.TemporaryDirectory() as logs:
            run = run_crashes(
                database_url,
                options.redis_url,
                prefix,
                api_key,
                Path(logs),
                requests=options.requests,
                clients=options.clients,
                gateways_count=options.gateways,
            )
        with database.transaction() as session:
            rows = session.exec(select(UsageEvent)).all()
            keys = session.exec(select(IdempotencyRecord)).all()
        totals = account(database, "acme")
        database.dispose()
        report = reconcile(database_url, billing_period(utcnow()))
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        delete_prefixed(options.redis_url, prefix)

    per_request = Counter(row.request_id for row in rows)
    delivered = {answer.billing_request_id for answer in run.answers if answer.status == 200}
    table = [
        ("requests (logical, each its own Idempotency-Key)", run.requests),
        ("clients", options.clients),
        ("gateways (one always left up)", options.gateways),
        ("seconds", f"{run.seconds:.0f}"),
        ("gateway SIGKILLs", run.kills),
        ("seconds between kills (mean)", f"{run.seconds / max(run.kills, 1):.1f}"),
        ("HTTP attempts", sum(answer.tries for answer in run.answers)),
        (
            "attempts refused by a dead gateway (connection errors)",
            sum(v for k, v in run.statuses.items() if not k.isdigit()),
        ),
        ("409 idempotency_request_in_progress (retried)", run.statuses.get("409", 0)),
        ("500 responses", run.statuses.get("500", 0)),
        ("requests that finally succeeded", run.succeeded),
        ("keys stuck in progress", sum(1 for key in keys if key.state != "completed")),
        ("requests billed twice", sum(1 for count in per_request.values() if count > 1)),
        ("billed although the client never got a 200", len(set(per_request) - delivered)),
        ("wrong transcripts returned", sum(1 for a in run.answers if a.text != a.expected_text)),
        ("prepaid balance after (micro-USD, never below 0)", totals.available_micros),
        ("reserved after (micro-USD)", totals.reserved_micros),
        ("asrgw admin reconcile exit code", report.returncode),
    ]
    width = max(len(name) for name, _ in table)
    lines = ["| what | count |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in table]
    for name, value in table:
        print(f"{name:<{width}}  {value}")
    if not options.no_write:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        record(
            ROOT / "docs" / "benchmarks.md",
            "Money through crashes",
            f"### Crash run, {stamp}\n\n`python bench/crash.py --requests {run.requests} "
            f"--gateways {options.gateways}` (PostgreSQL and Redis, {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f} at the end):\n\n" + "\n".join(lines) + "\n",
        )


if __name__ == "__main__":
    main()

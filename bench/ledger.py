"""Ledger throughput: reserve + settle (one usage row each) per second, on SQLite and PostgreSQL,
with 1 and 8 concurrent writers, all on one tenant (the worst case: every writer needs the same
account row lock) and each on its own tenant (a pool serving many customers).

Writers run as threads of one process (``threads``: one gateway replica, its worker threads
sharing one interpreter and its GIL), as threads of one process per core (``per-core``: one
replica or uvicorn worker per core), or each in its own process (``processes``: as many
replicas as writers, more processes than cores). Besides the rate, each row gives the CPU time
one settlement costs: in the writers' processes, and on PostgreSQL in the server backends
serving them (read from /proc, so only when the server runs on this machine; the WAL writer and
other background work are not counted). It bounds the rate: N cores can settle at most
N / (client + server CPU) per second.

    python bench/ledger.py                          # SQLite file, and PostgreSQL from DATABASE_URL
    python bench/ledger.py --seconds 5 --no-write --writers 8 --modes processes
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import record  # noqa: E402
from billing.db import Database  # noqa: E402
from billing.keys.service import authenticate  # noqa: E402
from billing.limits import MAX_CREDIT_MICROS  # noqa: E402
from billing.migrate import upgrade_to_head  # noqa: E402
from billing.reservations.service import reserve, settle  # noqa: E402
from billing.usage.schemas import BillableTranscription  # noqa: E402
from tests.fixtures.factories import create_tenant_with_key  # noqa: E402

TRANSCRIPT = "the weather is nice today please call me tomorrow morning"
LAYOUTS = [("one tenant", True), ("a tenant per writer", False)]


@dataclass(frozen=True)
class Run:
    settlements: int
    seconds: float
    client_cpu: float  # seconds, in the writers' processes
    server_cpu: float | None  # seconds, in the PostgreSQL backends serving them
    machine_cpu: float | None  # seconds, every process on the machine

    @property
    def other_cores(self) -> float | None:
        """Cores' worth of CPU that other work on the machine used meanwhile."""
        if self.machine_cpu is None:
            return None
        ours = self.client_cpu + (self.server_cpu or 0.0)
        return max(self.machine_cpu - ours, 0.0) / self.seconds

    @property
    def rate(self) -> float:
        return self.settlements / self.seconds

    @property
    def client_us(self) -> float:
        return self.client_cpu / self.settlements * 1e6

    @property
    def server_us(self) -> float | None:
        return None if self.server_cpu is None else self.server_cpu / self.settlements * 1e6


def settle_loop(database: Database, secret: str, stop: Any, counts: list[int]) -> None:
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


def writer_process(
    url: str, secrets: list[str], ready: Any, start: Any, stop: Any, done: Any
) -> None:
    """One process with a writer thread per secret, sharing an engine and its pool, like one
    gateway replica whose worker threads write to the ledger."""
    database = Database(url)
    for secret in secrets:  # connect and warm up before the clock starts
        with database.transaction() as session:
            authenticate(session, secret)
    counts: list[int] = []
    threads = [
        threading.Thread(target=settle_loop, args=(database, secret, stop, counts))
        for secret in secrets
    ]
    ready.put(None)
    start.wait()
    cpu = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ready.put((sum(counts), time.process_time() - cpu))
    done.wait()  # the connections stay open until their server CPU time has been read
    database.dispose()


class Backends:
    """CPU seconds of the PostgreSQL backends whose connections carry ``application_name``."""

    def __init__(self, url: str | None, application_name: str) -> None:
        self.engine = None
        if url is not None:
            observer = make_url(url).update_query_dict({"application_name": "ledger-bench"})
            self.engine = create_engine(observer, isolation_level="AUTOCOMMIT")
        self.application_name = application_name

    def cpu(self) -> dict[int, float] | None:
        if self.engine is None:
            return None
        with self.engine.connect() as connection:
            pids = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": self.application_name},
            ).scalars()
            try:
                return {pid: process_cpu_seconds(pid) for pid in pids}
            except OSError:
                return None  # the server is not on this machine

    def used_since(self, before: dict[int, float] | None) -> float | None:
        after = self.cpu()
        if before is None or after is None:
            return None
        return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())

    def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def machine_cpu_seconds() -> float | None:
    """CPU time used on this machine so far, all processes (None where /proc/stat is missing)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, writers: int, seconds: float, *, shared_tenant: bool, mode: str) -> Run:
    upgrade_to_head(url)
    database = Database(url)
    secrets = [
        create_tenant_with_key(
            database,
            f"bench-{uuid.uuid4().hex[:8]}",
            prepaid=True,
            credit_micros=MAX_CREDIT_MICROS,
            max_tokens_per_audio_second=50,
        )
        for _ in range(1 if shared_tenant else writers)
    ]
    database.dispose()
    postgres = make_url(url).get_backend_name() == "postgresql"
    application_name = f"ledger-bench-{uuid.uuid4().hex[:8]}"
    if postgres:
        url = (
            make_url(url)
            .update_query_dict({"application_name": application_name})
            .render_as_string(hide_password=False)
        )
    backends = Backends(url if postgres else None, application_name)
    processes = PROCESSES[mode](writers)
    per_process = [
        [secrets[index % len(secrets)] for index in range(writers) if index % processes == number]
        for number in range(processes)
    ]
    try:
        return measure_processes(url, per_process, seconds, backends)
    finally:
        backends.dispose()


# How many processes the writers run in; each process runs the rest as threads.
PROCESSES: dict[str, Callable[[int], int]] = {
    "threads": lambda _writers: 1,
    "processes": lambda writers: writers,
    "per-core": lambda writers: min(writers, os.cpu_count() or 1),
}


def measure_processes(
    url: str, secrets: list[list[str]], seconds: float, backends: Backends
) -> Run:
    context = multiprocessing.get_context("spawn")
    start, stop, done = context.Event(), context.Event(), context.Event()
    ready: Any = context.Queue()
    processes = [
        context.Process(target=writer_process, args=(url, own, ready, start, stop, done))
        for own in secrets
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get()  # start-up (imports, connecting) is not measured
    server_before = backends.cpu()
    machine_before = machine_cpu_seconds()
    started = time.perf_counter()
    start.set()
    time.sleep(seconds)
    stop.set()
    results = [ready.get() for _ in processes]
    elapsed = time.perf_counter() - started
    machine_after = machine_cpu_seconds()
    server_cpu = backends.used_since(server_before)
    done.set()
    for process in processes:
        process.join()
    machine_cpu = None
    if machine_before is not None and machine_after is not None:
        machine_cpu = machine_after - machine_before
    return Run(
        settlements=sum(count for count, _ in results),
        seconds=elapsed,
        client_cpu=sum(cpu for _, cpu in results),
        server_cpu=server_cpu,
        machine_cpu=machine_cpu,
    )


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


Row = tuple[str, str, int, str, list[Run]]


def measure_all(
    name: str,
    fresh_database: Callable[[], AbstractContextManager[str]],
    writer_counts: list[int],
    modes: list[str],
    options: argparse.Namespace,
) -> list[Row]:
    """Each layout, writer count and mode, ``options.repeat`` times, on one kind of database."""
    rows: list[Row] = []
    for layout, shared in LAYOUTS:
        for writers in writer_counts:
            if writers == 1 and not shared:
                continue
            # One writer is one writer, in any mode.
            for mode in modes if writers > 1 else modes[:1]:
                runs = []
                for _ in range(options.repeat):
                    with fresh_database() as url:
                        runs.append(
                            measure(url, writers, options.seconds, shared_tenant=shared, mode=mode)
                        )
                rows.append((name, layout, writers, mode, runs))
                print(
                    f"  {name:<19} {layout:<20} writers={writers:<2} {mode:<9} "
                    + " ".join(f"{run.rate:6.0f}" for run in runs)
                    + "  /s   other work: "
                    + " ".join(f"{run.other_cores or 0:.1f}" for run in runs)
                    + " cores",
                    flush=True,
                )
    return rows


def table(rows: list[Row]) -> str:
    def median(values: list[float | None]) -> str:
        known = [value for value in values if value is not None]
        return f"{statistics.median(known):.0f}" if known else "-"

    lines = [
        "| database | tenants | writers | as | settlements/s (median) | runs "
        "| client CPU µs per settlement | server CPU µs per settlement "
        "| cores used by other work |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, layout, writers, mode, runs in rows:
        others = [run.other_cores for run in runs if run.other_cores is not None]
        lines.append(
            f"| {name} | {layout} | {writers} | {mode if writers > 1 else '-'} "
            f"| {statistics.median(run.rate for run in runs):.0f} "
            f"| {', '.join(f'{run.rate:.0f}' for run in runs)} "
            f"| {median([run.client_us for run in runs])} "
            f"| {median([run.server_us for run in runs])} "
            f"| {', '.join(f'{cores:.1f}' for cores in others) or '-'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per row")
    parser.add_argument("--writers", default="1,8")
    parser.add_argument("--modes", default="threads,per-core,processes")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args()
    writer_counts = [int(value) for value in options.writers.split(",")]
    modes = options.modes.split(",")
    databases = options.databases.split(",")
    load_before = os.getloadavg()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        if "sqlite" in databases:

            @contextmanager
            def sqlite_database() -> Iterator[str]:
                yield f"sqlite:///{scratch}/ledger-{uuid.uuid4().hex[:8]}.db"

            rows += measure_all(
                "SQLite (file, WAL)", sqlite_database, writer_counts, modes, options
            )
    base = os.environ.get("DATABASE_URL", "")
    if base and "postgresql" in databases:
        base = base.replace("postgresql://", "postgresql+psycopg://", 1)

        @contextmanager
        def postgres_database() -> Iterator[str]:
            url, schema = postgres_schema_url(base)
            try:
                yield url
            finally:
                drop_schema(base, schema)

        rows += measure_all("PostgreSQL", postgres_database, writer_counts, modes, options)
    load_after = os.getloadavg()
    report = (
        f"### Ledger settle throughput, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"One settlement = reserve (account row lock, reservation insert) + settle (usage row "
        f"insert, account and period update, reservation close), two transactions, each "
        f"committed before the next starts. As: threads of one process; threads of one process "
        f"per core; one process per writer. CPU: time per settlement in the writers' processes "
        f"and in the PostgreSQL backends serving them; other work: the rest of the machine's "
        f"CPU use during each run, in cores. {os.cpu_count()} cores; client and "
        f"database on the same machine; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after. "
        f"Command: `python bench/ledger.py {' '.join(sys.argv[1:])}`.\n\n{table(rows)}\n"
    )
    print()
    print(report)
    if not options.no_write:
        record(options.out, "Ledger settle throughput", report)


if __name__ == "__main__":
    main()

"""The journal's write path alone, PostgreSQL beside SQLite: readings shaped like the journal's
rows inserted in batches (one transaction each, durable settings on both: PostgreSQL's defaults
with fsync and synchronous_commit on, SQLite WAL with synchronous=FULL), then the bytes each row
takes on disk with its indexes. PostgreSQL's table is partitioned by day, as docs/district.md
proposes.

    .venv/bin/python -m bench.store_writes [--rows 200000] [--batch 200]

It prints one line per store: ``store=… rows_per_s=… bytes_per_row=…``; ``postgresql-copy``
is the same batches through ``COPY`` into a temporary table and one ``INSERT … SELECT … ON
CONFLICT DO NOTHING`` (the duplicate drop kept). ``journal-sqlite`` and ``journal-postgresql``
are the journal classes themselves (:class:`ingest.journal.Journal`,
:class:`ingest.journal_pg.PgJournal`): decoded wearable readings through ``write_batch``, as
the pipeline writes them, with everything each class does per batch (duplicate keys, compact
payloads, last-seen times; on PostgreSQL the device partition and day partitions). ``make
bench`` prints those two lines (``--journals-only``). The sizing in docs/district.md is made
of these figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from devtools.postgres import Postgres
from district.pg import Connection, connect
from ingest.journal import Journal
from ingest.journal_pg import PgJournal
from ingest.journal_store import JournalStore
from ingest.payloads import Reading, decode

DAY = 86_400.0
START = 1_780_000_000.0  # a midnight-aligned epoch would not matter: partitions cover the span

PG_SCHEMA = """
CREATE TABLE readings (
    id        bigint GENERATED ALWAYS AS IDENTITY,
    device_id text NOT NULL,
    kind      text NOT NULL,
    stream    text NOT NULL,
    ts        timestamptz NOT NULL,
    received  timestamptz NOT NULL,
    seq       bigint,
    dedup     text,
    payload   jsonb NOT NULL
) PARTITION BY RANGE (ts);
CREATE UNIQUE INDEX readings_dedup ON readings (device_id, dedup, ts);
CREATE INDEX readings_device_ts ON readings (device_id, ts);
"""

SQLITE_SCHEMA = """
CREATE TABLE readings (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, kind TEXT NOT NULL, stream TEXT NOT NULL,
    ts REAL NOT NULL, received REAL NOT NULL, seq INTEGER, dedup TEXT, payload TEXT NOT NULL
);
CREATE UNIQUE INDEX readings_dedup ON readings (device_id, dedup);
CREATE INDEX readings_device_ts ON readings (device_id, ts);
"""

Row = tuple[str, str, str, float, float, int, str, str]


def rows(n: int, devices: int = 4400) -> Iterator[Row]:
    rnd = random.Random(7)
    for i in range(n):
        d = f"wr-{rnd.randrange(devices):05d}"
        ts = START + i * 0.1
        payload = json.dumps(
            {"heart_rate": rnd.randint(55, 110), "spo2": rnd.randint(92, 99), "battery": 80}
        )
        yield d, "wearable", "vitals", ts, ts + 0.05, i, f"{d}:{i}", payload


def batches(n: int, size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for r in rows(n):
        batch.append(r)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _insert_many(db: Connection, b: list[Row]) -> None:
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (device_id, kind, stream, ts, received, seq,"
            " dedup, payload) VALUES (%s, %s, %s, to_timestamp(%s),"
            " to_timestamp(%s), %s, %s, %s::jsonb) ON CONFLICT DO NOTHING",
            b,
        )


def _copy_then_insert(db: Connection, b: list[Row]) -> None:
    """COPY into a temporary table, then one INSERT … SELECT that keeps the duplicate drop."""
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS staging (device_id text, kind text, stream text,"
        " ts float8, received float8, seq bigint, dedup text, payload text) ON COMMIT DELETE ROWS"
    )
    with db.cursor() as cur, cur.copy("COPY staging FROM STDIN") as copy:
        for r in b:
            copy.write_row(r)
    db.execute(
        "INSERT INTO readings (device_id, kind, stream, ts, received, seq, dedup, payload)"
        " SELECT device_id, kind, stream, to_timestamp(ts), to_timestamp(received), seq, dedup,"
        " payload::jsonb FROM staging ON CONFLICT DO NOTHING"
    )


def bench_pg(n: int, size: int, *, copy: bool = False) -> tuple[float, float]:
    with Postgres() as pg:
        url = pg.create_database("bench")
        with connect(url, autocommit=True) as db:
            db.execute(PG_SCHEMA.encode())
            days = int(n * 0.1 // DAY) + 2
            for d in range(days):
                lo, hi = START + d * DAY, START + (d + 1) * DAY
                db.execute(
                    f"CREATE TABLE readings_{d} PARTITION OF readings FOR VALUES FROM"
                    f" (to_timestamp({lo})) TO (to_timestamp({hi}))".encode()
                )
            write = _copy_then_insert if copy else _insert_many
            t0 = time.perf_counter()
            for b in batches(n, size):
                with db.transaction():
                    write(db, b)
            elapsed = time.perf_counter() - t0
            db.execute("CHECKPOINT")
            size_row = db.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                " WHERE inhparent = 'readings'::regclass"
            ).fetchone()
            total = float(size_row[0]) if size_row and size_row[0] is not None else 0.0
    return n / elapsed, total / n


def bench_sqlite(n: int, size: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.db"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SQLITE_SCHEMA)
        t0 = time.perf_counter()
        for b in batches(n, size):
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR IGNORE INTO readings (device_id, kind, stream, ts, received, seq,"
                " dedup, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                b,
            )
            db.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        return n / elapsed, path.stat().st_size / n


def readings(n: int, devices: int = 4400) -> list[Reading]:
    """``n`` wearable telemetry messages as decode makes them (the device's time and ``seq``,
    the demo's fields), received over the last ``n`` / 10 seconds: 10 a second."""
    rnd = random.Random(7)
    start = time.time() - n * 0.1
    out = []
    for i in range(n):
        d = rnd.randrange(devices)
        received = start + i * 0.1
        body = {
            "ts": round((received - 0.05) * 1000),
            "seq": i,
            "heart_rate": rnd.randint(55, 110),
            "spo2": rnd.randint(92, 99),
            "skin_temp_c": round(rnd.uniform(35.5, 37.0), 1),
            "steps": rnd.randint(0, 20_000),
            "battery": 80,
            "worn": True,
        }
        r = decode(
            f"community/y/wearable/wr-{d:05d}/telemetry", json.dumps(body).encode(), received
        )
        assert isinstance(r, Reading), r
        out.append(r)
    return out


def _journal_rate(journal: JournalStore, batch: list[Reading], size: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(batch), size):
        result = journal.write_batch(batch[i : i + size], [])
        assert result.duplicates == 0
    return len(batch) / (time.perf_counter() - t0)


def bench_journal_sqlite(n: int, size: int) -> tuple[float, float]:
    """The service's journal (:class:`ingest.journal.Journal`, synchronous=FULL as it runs)."""
    batch = readings(n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.db"
        journal = Journal(path)
        try:
            rate = _journal_rate(journal, batch, size)
        finally:
            journal.close()
        db = sqlite3.connect(path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        return rate, path.stat().st_size / n


def bench_journal_pg(n: int, size: int) -> tuple[float, float]:
    """The PostgreSQL journal (:class:`ingest.journal_pg.PgJournal`) on a throwaway cluster
    with PostgreSQL's durable defaults; bytes: the readings' partitions with their indexes."""
    batch = readings(n)
    with Postgres() as pg:
        url = pg.create_database("bench")
        journal = PgJournal(url)
        try:
            rate = _journal_rate(journal, batch, size)
        finally:
            journal.close()
        with connect(url, autocommit=True) as db:
            db.execute("CHECKPOINT")
            size_row = db.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                " WHERE inhparent = 'readings'::regclass"
            ).fetchone()
        total = float(size_row[0]) if size_row and size_row[0] is not None else 0.0
    return rate, total / n


JOURNALS: list[tuple[str, Callable[[int, int], tuple[float, float]]]] = [
    ("journal-sqlite", bench_journal_sqlite),
    ("journal-postgresql", bench_journal_pg),
]
"""The two journal classes' ``write_batch``, as the pipeline calls it (``make bench``)."""


def journals(n: int = 100_000, size: int = 200) -> list[str]:
    """One line per journal class: ``store=… rows=… batch=… rows_per_s=… bytes_per_row=…``."""
    lines = []
    for name, fn in JOURNALS:
        rate, per_row = fn(n, size)
        lines.append(
            f"store={name} rows={n} batch={size} rows_per_s={rate:,.0f}"
            f" bytes_per_row={per_row:,.0f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="journal-shaped writes: PostgreSQL beside SQLite")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument(
        "--journals-only",
        action="store_true",
        help="only the two journal classes' write_batch (what make bench prints)",
    )
    args = p.parse_args(argv)
    stores: list[tuple[str, Callable[[int, int], tuple[float, float]]]] = [
        ("sqlite", bench_sqlite),
        ("postgresql", bench_pg),
        ("postgresql-copy", lambda n, size: bench_pg(n, size, copy=True)),
    ]
    if args.journals_only:
        stores = []
    for name, fn in [*stores, *JOURNALS]:
        rate, per_row = fn(args.rows, args.batch)
        print(
            f"store={name} rows={args.rows} batch={args.batch} rows_per_s={rate:,.0f}"
            f" bytes_per_row={per_row:,.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The backtest on PostgreSQL beside SQLite, on one journal: a data directory made by
``bench.rules`` (its SQLite journal and alert store) is copied into a PostgreSQL database (rows
in id order, as the SQLite journal holds them), then the same backtest runs on both, in one
process and in two, timed; the figures must be the same.

    .venv/bin/python -m bench.rules --out /tmp/day --hours 3
    .venv/bin/python -m bench.backtest_pg --data /tmp/day [--url postgresql://…] [--hours 3]

Without ``--url`` a throwaway PostgreSQL is started (devtools/postgres.py). Wall time is noisy
on a shared machine; the CPU of this process and its children (the replay processes) is the
steadier figure; the server's own CPU (the scan and the sort) is printed beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from alerts.db import Database
from alerts.noise import FlapGate
from district import timeparts
from district.partitions import partition_of
from district.pg import connect
from ingest.journal_pg import JSON_PAYLOAD, PgJournal
from ingest.payloads import MAX_AGE_S, MAX_FUTURE_S
from registry.loader import load_registry
from rules.backtest import Report, backtest
from rules.model import builtin_pack, load_rules

DAY = 86_400


def copy(data: Path, url: str) -> int:
    """The SQLite journal's rows and alerts of ``data`` into the database at ``url``."""
    PgJournal(url).close()  # migrated
    src = sqlite3.connect(f"file:{data / 'journal.db'}?mode=ro", uri=True)
    lo, hi = src.execute("SELECT min(received), max(received) FROM readings").fetchone()
    n = 0
    with connect(url) as db:
        timeparts.ensure_ahead(
            db,
            "readings",
            "day",
            ahead=int((hi - lo) // DAY) + 3,
            now=datetime.fromtimestamp(lo - MAX_AGE_S, UTC),
        )
        with (
            db.cursor() as cur,
            cur.copy(
                "COPY readings (partition, pts, device_id, shape, ts, received, seq, dedup, event,"
                " ts_flag, payload) FROM STDIN"
            ) as out,
        ):
            for device, shape, ts, received, seq, dedup, event, ts_flag, payload in src.execute(
                "SELECT device_id, shape, ts, received, seq, ifnull(dedup, seq), event, ts_flag,"
                " payload FROM readings ORDER BY id"
            ):
                pts = ts if received - MAX_AGE_S <= ts <= received + MAX_FUTURE_S else received
                if isinstance(payload, str):
                    payload, shape = payload.encode(), shape + JSON_PAYLOAD
                out.write_row(
                    (
                        partition_of(device),
                        datetime.fromtimestamp(pts, UTC),
                        device,
                        shape,
                        ts,
                        received,
                        seq,
                        dedup,
                        event,
                        ts_flag,
                        payload,
                    )
                )
                n += 1
        alerts = sqlite3.connect(f"file:{data / 'alerts.db'}?mode=ro", uri=True)
        alerts.row_factory = sqlite3.Row
        have = {
            r[0]
            for r in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'alerts'"
            )
        }
        for row in alerts.execute("SELECT * FROM alerts ORDER BY id"):
            cols = [c for c in row.keys() if c in have]  # noqa: SIM118 (sqlite3.Row)
            db.execute(
                f"INSERT INTO alerts ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                [row[c] for c in cols],
            )
        db.execute("ANALYZE readings")
    return n


def server_cpu(url: str) -> float:
    """CPU seconds of the server's processes so far (its postmaster's children, from /proc)."""
    with connect(url, autocommit=True) as db:
        row = db.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'").fetchone()
    assert row is not None
    pid = int((Path(row[0]) / "postmaster.pid").read_text().split()[0])
    tick = float(__import__("os").sysconf("SC_CLK_TCK"))
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            f = stat.read_text().rsplit(")", 1)[1].split()
            if int(f[1]) == pid or stat.parent.name == str(pid):  # ppid, or the postmaster
                total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / tick
    return total


@contextlib.contextmanager
def measured(label: str, url: str) -> Iterator[None]:
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0, t0 = server_cpu(url), time.perf_counter()
    yield
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) + (
        c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
    )
    print(
        f"{label:22} wall {wall:6.1f} s  client CPU {cpu:6.1f} s  server CPU"
        f" {server_cpu(url) - s0:5.1f} s  max RSS {r1.ru_maxrss // 1024} MB (self)"
    )


def run(data: Path, url: str, hours: float) -> int:
    import bench.rules as day

    n = copy(data, url)
    print(f"copied {n} journal rows into {url.rsplit('/', 1)[-1]}")
    registry = load_registry(data / "registry")
    rules = load_rules([builtin_pack()])
    since, until = day.DAY, day.DAY + hours * 3600

    def one(journal: Path | PgJournal, jobs: int, alerts: object) -> Report:
        return backtest(
            journal,
            rules,
            rules,
            registry,
            since=since,
            until=until,
            tz=day.TZ,
            alerts=alerts,  # type: ignore[arg-type]
            gate=lambda clock: FlapGate(3, 600.0, clock),
            jobs=jobs,
        )

    reports: dict[str, Report] = {}
    pg = PgJournal(url)
    store = Database.open(url)
    try:
        for jobs in (1, 2):
            with measured(f"sqlite, {jobs} process(es)", url):
                reports[f"sqlite{jobs}"] = one(data / "journal.db", jobs, data / "alerts.db")
            with measured(f"postgresql, {jobs} process(es)", url), store.connection() as db:
                db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                reports[f"pg{jobs}"] = one(pg, jobs, db)
    finally:
        store.close()
        pg.close()
    first = reports["sqlite1"]
    same = all(
        (r.new, r.in_force, r.actual, r.rows)
        == (first.new, first.in_force, first.actual, first.rows)
        for r in reports.values()
    )
    print(f"{first.rows} rows replayed; the same report on all four: {same}")
    print(first.text())
    return 0 if same else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a directory made by bench.rules")
    p.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway one)")
    p.add_argument("--hours", type=float, default=3.0, help="hours of the day backtested")
    args = p.parse_args()
    if args.url is not None:
        return run(args.data, args.url, args.hours)
    from devtools.postgres import Postgres

    with Postgres() as server:
        return run(args.data, server.create_database("backtest"), args.hours)


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a fall's publish→alert time goes on PostgreSQL, stage by stage, from the server's own
commit timestamps: ``jiayuan run`` on a throwaway PostgreSQL (``track_commit_timestamp=on``,
durable defaults unless ``--set``), a background load, falls published one every 100 ms and
timed to their alerts on ``/api/stream`` (as ``make bench``'s latency phase), then for each fall:

- publish → received (the reading's ``received``, the service's clock);
- received → its row committed (``pg_xact_commit_timestamp`` of the row's ``xid``);
- committed → raised (the alert's ``raised_at``, the rules worker's clock);
- raised → the alert committed (the commit timestamp of its "raised" history row's ``xmin``:
  the alert row's own is a later update's, such as its incident's);
- committed → on the stream (the probe's arrival).

    .venv/bin/python -m bench.fall_path [--falls 60] [--rate 5000] [--set synchronous_commit=off]
                                        [--statements 15]

``--statements N`` loads ``pg_stat_statements`` and prints the N statements that took the server
longest over the run (calls, total and mean time, rows): how the journal's repeat check was
found reading every untimed row at each batch (README, "PostgreSQL: a plan and a look that read
every row").

Every clock is this machine's; a stage within a millisecond or two of zero may come out
slightly negative (PostgreSQL stamps a commit just before it returns).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.load import BackgroundLoad, FallProbe, bench_registry, service_registry
from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.postgres import Postgres
from district.pg import connect

STAGES = (
    "publish → received",
    "received → row committed",
    "row committed → raised (rules worker)",
    "raised → alert committed",
    "alert committed → on the stream",
    "publish → on the stream",
)

_TIMES = b"""
SELECT r.device_id, r.received,
       extract(epoch FROM pg_xact_commit_timestamp(r.xid::text::xid))::float8,
       a.raised_at,
       extract(epoch FROM pg_xact_commit_timestamp(h.xmin))::float8
FROM readings r JOIN alerts a ON a.device_id = r.device_id
JOIN alert_history h ON h.alert_id = a.id AND h.action = 'raised'
WHERE r.device_id LIKE 'probe-%'
"""


_STATEMENTS = b"""
SELECT calls, total_exec_time, total_exec_time / greatest(calls, 1), rows,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'jiayuan')
ORDER BY total_exec_time DESC LIMIT %s
"""


def measure(
    falls: int, rate: int, settings: dict[str, str], statements: int = 0
) -> tuple[dict[str, list[float]], list[tuple[Any, ...]]]:
    """Seconds each fall spent in each of :data:`STAGES`; with ``statements``, that many rows of
    ``pg_stat_statements`` (calls, total ms, mean ms, rows, the statement), longest first."""
    work = Path(tempfile.mkdtemp(prefix="jiayuan-fall-path-"))
    registry = bench_registry([], falls)
    broker = Broker(work / "mosquitto", registry=registry).start()
    if statements:
        settings = {"shared_preload_libraries": "pg_stat_statements", **settings}
    pg = Postgres(settings={"track_commit_timestamp": "on", **settings})
    svc: ServiceProcess | None = None
    try:
        pg.start()
        url = pg.create_database("jiayuan")
        if statements:
            with connect(url, name="bench", autocommit=True) as db:
                db.execute(b"CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        fleet = service_registry(registry, work / "registry")
        svc = ServiceProcess(work / "service", broker, database_url=url, registry=fleet).start()
        ready = threading.Event()
        probe = FallProbe(svc.url, svc.token, broker, ready)
        probe.start()
        if not ready.wait(10):
            raise RuntimeError("the live stream did not answer")
        load = BackgroundLoad(broker, rate, work / "background")
        load.start()
        time.sleep(2.0)
        wall0, perf0 = time.time(), time.perf_counter()
        probe.run(falls, interval=0.1)
        load.stop()
        probe.stop()
        with connect(url, name="bench", autocommit=True) as db:
            rows = db.execute(_TIMES).fetchall()
            top = db.execute(_STATEMENTS, (statements,)).fetchall() if statements else []
        sent = {d: wall0 + (t - perf0) for d, t in probe.sent_by_device().items()}
        seen = probe.latency_by_device()
        out: dict[str, list[float]] = {s: [] for s in STAGES}
        for dev, received, row_at, raised, alert_at in rows:
            if dev not in seen:
                continue
            at = [sent[dev], received, row_at, raised, alert_at, sent[dev] + seen[dev]]
            for stage, start, end in zip(STAGES[:-1], at, at[1:], strict=False):
                out[stage].append(end - start)
            out[STAGES[-1]].append(seen[dev])
        return out, top
    finally:
        try:
            if svc is not None:
                svc.stop()
        finally:
            pg.stop()
            broker.stop()
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--falls", type=int, default=60)
    ap.add_argument("--rate", type=int, default=5_000, help="background load, messages/s")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL server setting, e.g. synchronous_commit=off",
    )
    ap.add_argument(
        "--statements",
        type=int,
        default=0,
        metavar="N",
        help="print the N statements that took the server longest (pg_stat_statements)",
    )
    args = ap.parse_args(argv)
    settings = dict(s.split("=", 1) for s in args.set)
    stages, top = measure(args.falls, args.rate, settings, args.statements)
    shown = " ".join(f"{k}={v}" for k, v in settings.items()) or "durable defaults"
    print(f"fall_path: {args.falls} falls at {args.rate:,} msg/s, PostgreSQL {shown}")
    width = max(map(len, STAGES))
    for stage, values in stages.items():
        v = sorted(values)
        if not v:
            print(f"fall_path:   {stage:<{width}}  no fall alerted")
            continue
        p90 = v[min(len(v) - 1, round(0.9 * (len(v) - 1)))]
        print(
            f"fall_path:   {stage:<{width}}  p50 {statistics.median(v) * 1000:7.1f} ms"
            f"  p90 {p90 * 1000:7.1f} ms  max {v[-1] * 1000:7.1f} ms  (n={len(v)})"
        )
    if top:
        print("fall_path: the server's statements, longest first (calls, total ms, mean ms, rows)")
        for calls, total, mean, nrows, text in top:
            print(f"fall_path:   {calls:>7,} {total:>9,.1f} {mean:>8.3f} {nrows:>9,}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

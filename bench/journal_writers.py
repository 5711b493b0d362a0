"""Several processes writing one journal: the lock contention of ``JIAYUAN_INGEST_PROCESSES``.

    .venv/bin/python -m bench.journal_writers [--processes 1 2] [--batches 200] [--batch 500]

Each writer process journals ``--batches`` batches of ``--batch`` wearable readings with
:meth:`ingest.journal.Journal.write_batch` (synchronous=FULL, as the service), as fast as it
can. SQLite lets one write transaction at a time; a writer that finds the file locked waits in
its busy handler. Per batch, wall time minus the thread's CPU time is what the batch waited:
fsync alone with one writer; fsync plus the other writers' transactions with several. Beside
them a probe process commits one reading every 20 ms, as the main process commits a fall
while the ingest processes journal telemetry: its commit time is what a fall's alert waits
for the journal. Each count runs twice: with the journal's write lock
(:func:`ingest.follower.write_lock`: a ``flock`` between processes) and without it between
processes (SQLite's busy handler alone, which sleeps 1, 2, 5 … 100 ms while the file is
locked). One line each: ``writers=K lock=flock|busy rows_per_s=… batch_ms_p50=…
batch_ms_p99=… wait_ms_mean=… cpu_us_per_row=… probe_ms_p50=… probe_ms_p99=…``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ingest import follower
from ingest.journal import Journal
from ingest.payloads import Reading


def _busy_only() -> None:
    """Between processes, SQLite's busy handler alone (the lock file not used)."""
    follower.WriteLock._open = lambda _self: -1  # type: ignore[method-assign,assignment]


def _probe(path: Path, flock: bool, start: float, done: Any, out: Connection) -> None:
    if not flock:
        _busy_only()
    journal = Journal(path, synchronous="FULL")
    walls: list[float] = []
    while time.time() < start:
        time.sleep(0.001)
    n = 0
    while not done.is_set():
        now = time.time()
        r = Reading("y", "wearable", "probe", "event", now, now, n, {}, event="fall", payload=b"{}")
        t0 = time.perf_counter()
        journal.write_batch([r], [])
        walls.append(time.perf_counter() - t0)
        n += 1
        time.sleep(0.02)
    journal.close()
    out.send(walls)


def _writer(
    path: Path, flock: bool, index: int, batches: int, size: int, start: float, out: Connection
) -> None:
    if not flock:
        _busy_only()
    journal = Journal(path, synchronous="FULL")
    walls: list[float] = []
    waits: list[float] = []
    cpu_total = 0.0
    while time.time() < start:
        time.sleep(0.001)
    for b in range(batches):
        now = time.time()
        readings = [
            Reading(
                "y",
                "wearable",
                f"w{index}-{i % 200}",
                "telemetry",
                now,
                now,
                b * size + i,
                {"heart_rate": 70.0, "steps": float(i)},
                payload=b'{"heart_rate": 70, "steps": 1}',
            )
            for i in range(size)
        ]
        t0, c0 = time.perf_counter(), time.thread_time()
        journal.write_batch(readings, [])
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        walls.append(wall)
        waits.append(max(0.0, wall - cpu))
        cpu_total += cpu
    journal.close()
    out.send((walls, waits, cpu_total))


def run(processes: int, batches: int, size: int, flock: bool) -> str:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="jiayuan-writers-") as tmp:
        path = Path(tmp) / "journal.db"
        Journal(path).close()  # the schema, made once
        start = time.time() + 1.5  # every writer started and connected
        pipes, procs = [], []
        for i in range(processes):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_writer, args=(path, flock, i, batches, size, start, theirs))
            p.start()
            pipes.append(mine)
            procs.append(p)
        done = ctx.Event()
        probe_in, probe_out = ctx.Pipe()
        probe = ctx.Process(target=_probe, args=(path, flock, start, done, probe_out))
        probe.start()
        results = [c.recv() for c in pipes]
        end = time.time()
        done.set()
        probes = sorted(probe_in.recv())
        for p in [*procs, probe]:
            p.join()
    walls = sorted(w for r in results for w in r[0])
    waits = [w for r in results for w in r[1]]
    rows = processes * batches * size
    cpu = sum(r[2] for r in results)
    return (
        f"writers={processes} lock={'flock' if flock else 'busy'}"
        f" rows_per_s={rows / (end - start):.0f}"
        f" batch_ms_p50={walls[len(walls) // 2] * 1000:.1f}"
        f" batch_ms_p99={walls[int(len(walls) * 0.99)] * 1000:.1f}"
        f" wait_ms_mean={statistics.mean(waits) * 1000:.2f}"
        f" cpu_us_per_row={cpu / rows * 1e6:.1f}"
        f" probe_ms_p50={probes[len(probes) // 2] * 1000:.1f}"
        f" probe_ms_p99={probes[int(len(probes) * 0.99)] * 1000:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.journal_writers", description=__doc__)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    for k in args.processes:
        for flock in (True, False):
            print(run(k, args.batches, args.batch, flock), flush=True)


if __name__ == "__main__":
    main()

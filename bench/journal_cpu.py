"""The journal write's own CPU per reading: :meth:`ingest.journal.Journal.write_batch` alone, on
the messages ``python -m bench`` publishes (wearable telemetry with the device's ``ts`` and
``seq``, a few devices), with the file's durable settings (WAL, synchronous=FULL).

    .venv/bin/python -m bench.journal_cpu [--rows 100000] [--batch 250 1000] [--devices 8]

One line per batch size: ``batch=… write_us=… dump_us=… rows_us=… seen_us=… bytes_per_row=…``.
``write_us`` is the thread CPU time of ``write_batch`` per reading (best of 3 runs: the machine
is shared); the others are its parts, each timed alone: rowcodec's ``dump`` of the payload, the
rows as the insert binds them (``dump`` included), the last-seen bookkeeping. What is left of
``write_us`` is SQLite's: the inserts with their indexes and the commit (its fsync).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ingest.journal import Journal, _row_runs
from ingest.payloads import Reading, decode
from ingest.rowcodec import dump
from ingest.seen import SeenDevices


def readings(n: int, devices: int) -> list[Reading]:
    """``n`` messages as bench/load.py writes them, decoded, from ``devices`` devices."""
    rng = random.Random(7)
    now = time.time()
    start_ms = int(now * 1000) - n
    out = []
    for i in range(n):
        body = {
            "seq": i,
            "ts": start_ms + i,
            "heart_rate": rng.randint(60, 95),
            "spo2": rng.randint(94, 99),
            "battery": 80,
            "worn": True,
            "steps": i,
        }
        r = decode(
            f"community/y/wearable/b-w{i % devices}/telemetry", json.dumps(body).encode(), now
        )
        assert isinstance(r, Reading), r
        out.append(r)
    return out


def _best(fn: Callable[[], float], runs: int = 3) -> float:
    return min(fn() for _ in range(runs))


def _cpu(fn: Callable[[], object]) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def write_us(batch: list[Reading], size: int) -> tuple[float, float]:
    """CPU µs of ``write_batch`` per reading, and the file's bytes per reading after."""
    with tempfile.TemporaryDirectory(prefix="jiayuan-journal-cpu-") as tmp:
        journal = Journal(Path(tmp) / "journal.db")
        try:
            cpu = sum(
                _cpu(lambda i=i: journal.write_batch(batch[i : i + size], []))  # type: ignore[misc]
                for i in range(0, len(batch), size)
            )
        finally:
            journal.close()
        return cpu / len(batch) * 1e6, journal.path.stat().st_size / len(batch)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.journal_cpu", description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, nargs="+", default=[250, 1000])
    ap.add_argument("--devices", type=int, default=8)
    a = ap.parse_args()
    batch = readings(a.rows, a.devices)
    n = len(batch)
    dump_us = _best(
        lambda: _cpu(lambda: [dump(r.payload, r.ts, r.ts_flag, r.seq) for r in batch]) / n * 1e6
    )
    for size in a.batch:
        chunks = [batch[i : i + size] for i in range(0, n, size)]
        rows_us = _best(lambda: _cpu(lambda: [_row_runs(c) for c in chunks]) / n * 1e6)  # noqa: B023

        def note_all(chunks: list[list[Reading]] = chunks) -> None:
            seen = SeenDevices()
            for c in chunks:
                seen.note(c)

        seen_us = _best(lambda: _cpu(note_all) / n * 1e6)
        runs = [write_us(batch, size) for _ in range(3)]
        print(
            f"batch={size} write_us={min(r[0] for r in runs):.2f} dump_us={dump_us:.2f}"
            f" rows_us={rows_us:.2f} seen_us={seen_us:.2f} bytes_per_row={runs[0][1]:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

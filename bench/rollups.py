"""The rollups follower alone: CPU per journal row, reading rows back and folding them into the
per-minute and per-hour rollups with its cursor.

``python -m bench.rollups [--rows 50000] [--devices 4] [--batch 500]``: a journal of wearable
telemetry (the benchmark's messages: six metrics each) in a temporary directory, then one
catch-up of the follower over it in the calling thread (no waiting between steps). Small
batches (``--batch 50``) are what a follower woken at every ingest commit took before it
gathered a quarter of a second of rows. ``--fed``: the rows are read first as the rules worker
reads them (``--batch`` at a time, not timed) and offered to the follower
(:meth:`ingest.rollups.RollupWorker.offer`), as in the service: only folding and writing count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from ingest.journal import Journal
from ingest.payloads import Reading, decode
from ingest.rollups import RollupWorker
from ingest.topics import topic_for
from rules.sources import SqliteRows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--fed", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jiayuan-bench-rollups-"))
    journal = Journal(tmp / "journal.db", synchronous="NORMAL")
    t0 = time.time()
    batch: list[Reading] = []
    for i in range(a.rows):
        n = i // a.devices
        body = {"seq": n, "heart_rate": 60 + i % 30, "spo2": 97, "steps": n, "battery": 80}
        topic = topic_for("y", "wearable", f"w{i % a.devices}", "telemetry")
        r = decode(topic, json.dumps({**body, "worn": True}).encode(), t0 + i / 1e4)
        assert isinstance(r, Reading)
        batch.append(r)
        if len(batch) == 1000:
            journal.write_batch(batch, [])
            batch = []
    if batch:
        journal.write_batch(batch, [])
    journal.close()
    worker = RollupWorker(tmp / "journal.db", batch_rows=a.batch, duty=1.0)
    if a.fed:
        source = SqliteRows(tmp / "journal.db", tap=worker.offer)
        worker.fed_max = a.rows
        while source.read(a.batch)[1]:
            pass
        source.close()
    wall, cpu = time.perf_counter(), time.process_time()
    worker.run_until_idle()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    shutil.rmtree(tmp)
    print(
        f"rollup_rows={worker.position} batch={a.batch} devices={a.devices} fed={a.fed}"
        f" read={worker.from_journal} wall_s={wall:.2f}"
        f" cpu_us_per_row={cpu / max(1, worker.position) * 1e6:.1f}"
    )


if __name__ == "__main__":
    main()

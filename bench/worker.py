"""The rules worker alone: CPU per journal row, reading rows back, evaluating the built-in pack
and committing alert changes, rule state and cursor together.

``python -m bench.worker [--rows 100000] [--devices 1000] [--batch 2000]``: a journal of
wearable telemetry in a temporary directory, then one catch-up of the worker over it. Small
batches (``--batch 50``) are what a live stream gives; large ones a catch-up after downtime.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from alerts import AlertStore
from alerts.noise import FlapGate
from ingest.journal import Journal
from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Registry
from rules.engine import RuleEngine
from rules.model import builtin_pack, load_rules
from rules.worker import RulesWorker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=1_000)
    ap.add_argument("--batch", type=int, default=2_000)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jiayuan-bench-worker-"))
    journal = Journal(tmp / "journal.db", synchronous="NORMAL")
    t0 = time.time()
    batch: list[Reading] = []
    for i in range(a.rows):
        body = {"seq": i // a.devices, "heart_rate": 72, "spo2": 97, "steps": i // a.devices}
        topic = topic_for("y", "wearable", f"w{i % a.devices}", "telemetry")
        r = decode(topic, json.dumps({**body, "battery": 80, "worn": True}).encode(), t0 + i / 1e4)
        assert isinstance(r, Reading)
        batch.append(r)
        if len(batch) == 1000:
            journal.write_batch(batch, [])
            batch = []
    if batch:
        journal.write_batch(batch, [])
    rules = load_rules([builtin_pack()])
    worker = RulesWorker(
        tmp / "journal.db",
        AlertStore(tmp / "alerts.db"),
        lambda: RuleEngine(rules, Registry("y")),
        community="y",
        gate=FlapGate(),
        batch_rows=a.batch,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    worker.run_until_idle()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"worker_rows={worker.position} batch={a.batch} wall_s={wall:.2f}"
        f" cpu_us_per_row={cpu / max(1, worker.position) * 1e6:.1f}"
    )


if __name__ == "__main__":
    main()

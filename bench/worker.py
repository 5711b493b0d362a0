"""The rules worker alone: CPU per journal row, reading rows back, evaluating the built-in pack
and committing alert changes, rule state and cursor together.

``python -m bench.worker [--rows 100000] [--devices 1000] [--batch 2000] [--registered]
[--full]``: a journal of wearable telemetry in a temporary directory, then one catch-up of the
worker over it. Small batches (``--batch 50``) are what a live stream gives; large ones a
catch-up after downtime. ``--registered``: the wearables are in the registry (a community's
case; without it they are strangers, which the worker never caches). ``--full``: the worker's
straightforward path (every row built into a reading), for comparison.
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
from registry.models import Building, Device, Registry
from rules.engine import RuleEngine
from rules.model import builtin_pack, load_rules
from rules.worker import RulesWorker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=1_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--registered", action="store_true")
    ap.add_argument("--full", action="store_true")
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
    devices = [
        Device(device_id=f"w{i}", kind="wearable", compound="c1", building="b1", unit=f"u{i}")
        for i in range(a.devices if a.registered else 0)
    ]
    registry = Registry("y", buildings=[Building(building="b1", compound="c1")], devices=devices)
    worker = RulesWorker(
        tmp / "journal.db",
        AlertStore(tmp / "alerts.db"),
        lambda: RuleEngine(rules, registry),
        community="y",
        gate=FlapGate(),
        batch_rows=a.batch,
        fast=not a.full,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    worker.run_until_idle()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"worker_rows={worker.position} batch={a.batch} registered={a.registered}"
        f" full={a.full} wall_s={wall:.2f}"
        f" cpu_us_per_row={cpu / max(1, worker.position) * 1e6:.1f}"
    )


if __name__ == "__main__":
    main()

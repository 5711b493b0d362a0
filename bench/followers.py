"""The two followers of the journal as the service runs them, without the broker: CPU of the rules
worker's thread and of the rollups' thread per journal row, while a writer thread journals
wearable telemetry in small batches and hands each commit to the worker, as the ingest
pipeline does.

``python -m bench.followers [--rows 100000] [--devices 4] [--batch 20] [--rate 20000]
[--no-offer] [--wake] [--rollup-batch 500]``: ``--batch`` readings a commit, ``--rate``
readings a second (paced); ``--no-offer``: the rollups read the journal themselves instead of
folding the rows the rules worker read (:meth:`ingest.rollups.RollupWorker.offer`);
``--wake``: the worker is woken at every commit (:meth:`rules.worker.RulesWorker.wake`), not
as the pipeline does (:meth:`~rules.worker.RulesWorker.committed`: telemetry gathered);
``--rollup-batch``: the rollups' ``batch_rows``. Prints ``rules_us=X rollup_us=Y``: thread
CPU (``/proc``, 10 ms ticks) over the rows, once both followers reached the head. The machine
is shared: compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from alerts import AlertStore
from alerts.noise import FlapGate
from ingest.journal import Journal
from ingest.payloads import Reading, decode
from ingest.rollups import RollupWorker
from ingest.threadcpu import cpu_seconds
from ingest.topics import topic_for
from registry.models import Building, Device, Registry
from rules.engine import RuleEngine
from rules.model import builtin_pack, load_rules
from rules.sources import SqliteRows
from rules.worker import RulesWorker


def _readings(rows: int, devices: int) -> list[Reading]:
    t0 = time.time()
    out = []
    for i in range(rows):
        n = i // devices
        body = {"seq": n, "heart_rate": 60 + i % 30, "spo2": 97, "steps": n, "battery": 80}
        topic = topic_for("y", "wearable", f"w{i % devices}", "telemetry")
        r = decode(topic, json.dumps({**body, "worn": True}).encode(), t0 + i / 1e4)
        assert isinstance(r, Reading)
        out.append(r)
    return out


def _cpu(thread: threading.Thread | None) -> float:
    tid = None if thread is None else thread.native_id
    seconds = None if tid is None else cpu_seconds(tid)
    return 0.0 if seconds is None else seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--no-offer", action="store_true")
    ap.add_argument("--wake", action="store_true")
    ap.add_argument("--rollup-batch", type=int, default=500)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jiayuan-bench-followers-"))
    readings = _readings(a.rows, a.devices)
    journal = Journal(tmp / "journal.db", synchronous="NORMAL")
    rules = load_rules([builtin_pack()])
    devices = [
        Device(device_id=f"w{i}", kind="wearable", compound="c1", building="b1", unit=f"u{i}")
        for i in range(a.devices)
    ]
    registry = Registry("y", buildings=[Building(building="b1", compound="c1")], devices=devices)
    rollups = RollupWorker(journal.path, batch_rows=a.rollup_batch)
    source = SqliteRows(journal.path, tap=None if a.no_offer else rollups.offer)
    worker = RulesWorker(
        source,
        AlertStore(tmp / "alerts.db"),
        lambda: RuleEngine(rules, registry),
        community="y",
        gate=FlapGate(),
    )
    worker.start()
    rollups.start()
    pace = a.batch / a.rate
    start = time.monotonic()
    for n, i in enumerate(range(0, a.rows, a.batch)):
        written = journal.write_batch(readings[i : i + a.batch], [])
        if a.wake:
            worker.wake()
        else:
            worker.committed(written.new)
        ahead = start + (n + 1) * pace - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    wall = time.monotonic() - start
    deadline = time.monotonic() + 120
    while (worker.position < a.rows or rollups.position < a.rows) and time.monotonic() < deadline:
        rollups.wake()
        time.sleep(0.05)
    rules_s, rollup_s = _cpu(worker._thread), _cpu(rollups._thread)
    worker.stop()
    rollups.stop()
    journal.close()
    print(
        f"rows={a.rows} batch={a.batch} rate={a.rows / wall:,.0f}/s offer={not a.no_offer}"
        f" wake={a.wake} rollup_read={rollups.from_journal}"
        f" rules_us={rules_s / a.rows * 1e6:.2f} rollup_us={rollup_s / a.rows * 1e6:.2f}"
    )


if __name__ == "__main__":
    main()

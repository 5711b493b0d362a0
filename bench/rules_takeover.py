"""What a partition takeover costs the rules worker: ``RulesWorker.load()`` (the committed rule
state of the held partitions' devices) with every partition held and with half of them, on a
throwaway PostgreSQL.

    .venv/bin/python -m bench.rules_takeover [--devices 4400] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import psycopg

from alerts import AlertStore
from devtools.postgres import TEST_SETTINGS, Postgres
from district.leases import Lease
from ingest.journal_pg import PgJournal
from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Device, Registry
from rules.engine import RuleEngine
from rules.model import builtin_pack, load_rules
from rules.sources import PgRows
from rules.worker import RulesWorker

PARTITIONS = 64


class _Held:
    """A stand-in for the lease keeper: a fixed set of leases."""

    instance_id = "bench"
    count = PARTITIONS

    def __init__(self, held: dict[int, Lease]) -> None:
        self.held = held

    def owned(self) -> dict[int, Lease]:
        return self.held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=4400)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rules = load_rules([builtin_pack()])
    devices = [f"wr-{i:05d}" for i in range(args.devices)]
    registry = Registry(
        "y",
        devices=[
            Device(device_id=d, kind="wearable", compound="c3", building="b1", unit="1-1-101")
            for d in devices
        ],
    )
    engine = RuleEngine(rules, registry)
    body = {"ts": 1_700_000_000_000, "heart_rate": 70, "worn": True, "seq": 1}
    reading = decode(
        topic_for("y", "wearable", devices[0], "telemetry"), json.dumps(body).encode(), 1.7e9
    )
    assert isinstance(reading, Reading)
    engine.evaluate(reading)
    state = json.dumps(engine.export_state(devices[0]))
    with Postgres(settings=TEST_SETTINGS) as pg:
        url = pg.create_database("bench")
        PgJournal(url, partitions=PARTITIONS).close()
        store = AlertStore(url)
        with psycopg.connect(url) as db:
            db.cursor().executemany(
                "INSERT INTO rule_state (device_id, state) VALUES (%s, %s)",
                [(d, state) for d in devices],
            )
        try:
            for label, held in (("all", range(PARTITIONS)), ("half", range(PARTITIONS // 2))):
                leases = {p: Lease(p, 1) for p in held}
                worker = RulesWorker(
                    PgRows(url, held, fence=("bench", leases)),
                    store,
                    lambda: RuleEngine(rules, registry),
                    community="y",
                    leases=_Held(leases),
                )
                times = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    worker.load()
                    times.append(time.perf_counter() - t)
                worker.source.close()
                print(
                    f"load() over {label} of {PARTITIONS} partitions, {args.devices} devices"
                    f" ({len(state)}-byte states): {statistics.median(times) * 1000:.0f} ms"
                    f" (median of {args.runs})"
                )
        finally:
            store.close()


if __name__ == "__main__":
    main()

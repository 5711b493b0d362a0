"""The live stream across instances on a throwaway PostgreSQL (alerts/live.py): how long a change
committed by instance A takes to reach a subscriber of instance B, and what numbering every
history entry at commit (``0007_live.sql``: a deferred trigger under an advisory lock) costs two
instances raising alerts at once.

    .venv/bin/python -m bench.live [--changes 300] [--writers 2]

Prints the delivery time (median and 95th percentile, from A's call of ``apply`` to B's
subscriber being called; A's ``apply`` alone beside it) and the alerts raised per second by
``--writers`` stores writing at once, with the trigger and with it dropped (what the store costs
without a live stream).
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time

from alerts import AlertStore
from alerts.live import LiveChange, open_feed
from devtools.postgres import Postgres
from rules.transitions import Transition


def fire(device: str) -> Transition:
    return Transition(
        action="fire",
        rule_id="fall",
        device_id=device,
        kind="wearable",
        severity="critical",
        signal="alarm",
        route="caretaker",
        at=1_700_000_000.0,
        summary="Fall detected",
        labels={"community": "y", "building": "b3"},
    )


def delivery(url: str, changes: int) -> tuple[list[float], list[float]]:
    """Seconds from A's call of ``apply`` to B's subscriber, and of A's ``apply`` (its
    transaction, commit and own subscribers), one change at a time."""
    a, b = AlertStore.open(url), AlertStore.open(url)
    feed = open_feed(b)
    heard: queue.Queue[tuple[float, LiveChange]] = queue.Queue()
    feed.subscribe(lambda c: heard.put((time.perf_counter(), c)))
    took: list[float] = []
    applied: list[float] = []
    try:
        for i in range(changes):
            t0 = time.perf_counter()
            change = a.apply(fire(f"d-{i}"))
            applied.append(time.perf_counter() - t0)
            assert change is not None
            at, got = heard.get(timeout=30)
            assert got.change.entry.id == change.entry.id
            took.append(at - t0)
    finally:
        feed.close()
        a.close()
        b.close()
    return took, applied


def raises_per_s(url: str, writers: int, changes: int) -> float:
    """Alerts raised per second by ``writers`` stores (instances) at once, one per commit."""
    stores = [AlertStore.open(url) for _ in range(writers)]
    start = threading.Barrier(writers + 1)

    def write(store: AlertStore, w: int) -> None:
        start.wait()
        for i in range(changes):
            store.apply(fire(f"w{w}-{i}"))

    threads = [threading.Thread(target=write, args=(s, w)) for w, s in enumerate(stores)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for s in stores:
        s.close()
    return writers * changes / elapsed


def _ms(seconds: list[float]) -> str:
    s = sorted(seconds)
    p95 = s[int(0.95 * (len(s) - 1))]
    return f"median {statistics.median(s) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--changes", type=int, default=300)
    p.add_argument("--writers", type=int, default=2)
    args = p.parse_args()
    with Postgres() as pg:
        url = pg.create_database("live_delivery")
        AlertStore.open(url).close()  # migrated
        took, applied = delivery(url, args.changes)
        print(
            f"A's apply() to B's subscriber: {_ms(took)}; A's apply() alone: {_ms(applied)}"
            f" ({len(took)} changes, one at a time)"
        )
        rates: dict[str, float] = {}
        for name, drop in (("numbered at commit", False), ("trigger dropped", True)):
            url = pg.create_database(f"live_rate_{int(drop)}")
            store = AlertStore.open(url)
            if drop:
                with store.connection() as db:
                    db.execute("DROP TRIGGER alert_history_live ON alert_history")
            store.close()
            rates[name] = raises_per_s(url, args.writers, args.changes)
        print(
            f"alerts raised per second by {args.writers} instances at once: "
            + ", ".join(f"{name} {r:.0f}" for name, r in rates.items())
        )


if __name__ == "__main__":
    main()

"""The rules worker's fast path (:class:`rules.replay.FastRows`) against its straightforward one
(every row built into a reading for ``engine.evaluate``): two workers over the same journal,
batch by batch, with ticks and registry swaps between batches (a device retired, a stranger
registered, a resident's threshold changed, a device moved out of its building). After every
batch both hand the alert store the same transitions and presence changes, and have saved the
same rule state, flapping state and cursor."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts import AlertStore
from alerts.noise import FlapGate
from base.sql import Db
from ingest.journal import Journal
from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Device, Registry
from rules.engine import RuleEngine
from rules.model import Rule, builtin_pack, load_rules
from rules.transitions import Transition
from rules.worker import Presence, RulesWorker
from tests.alerting import TZ
from tests.clock import FakeClock
from tests.unit.test_backtest_fast import (
    _BASE,
    T0,
    Body,
    Items,
    journal_rows,
    load,
    registry,
    rule_files,
    steps,
)


def _swapped(which: int) -> Registry:
    """The registry after one of the changes staff make while the service runs."""
    base = registry()
    devices = list(base.devices.values())
    residents = list(base.residents.values())
    if which == 0:  # w1 retired
        devices = [d for d in devices if d.device_id != "w1"]
    elif which == 1:  # a stranger commissioned
        devices.append(Device(device_id="x0", kind="wearable", compound="c1", building="b1"))
    elif which == 2:  # r0's own heart-rate level lowered, r1's area taken away
        residents = [
            r.model_copy(update={"thresholds": {"heart_rate_high": 85.0}})
            if r.resident_id == "r0"
            else r.model_copy(update={"allowed_area": None})
            if r.resident_id == "r1"
            else r
            for r in residents
        ]
    else:  # the smoke detector s0 moved out of its building
        devices = [
            d.model_copy(update={"building": None, "unit": None}) if d.device_id == "s0" else d
            for d in devices
        ]
    return Registry(
        "y", buildings=list(base.buildings.values()), devices=devices, residents=residents
    )


class Recording:
    """The alert store, recording what each batch hands it."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store
        self.connection = store.connection
        self.batches: list[tuple[list[Transition], list[Presence]]] = []

    def apply_batch(
        self,
        transitions: Sequence[Transition],
        presence: Sequence[Presence] = (),
        within: Callable[[Db], None] | None = None,
    ) -> Sequence[object]:
        key = lambda t: (t.rule_id, t.device_id, t.action, t.at)  # noqa: E731
        self.batches.append((sorted(transitions, key=key), list(presence)))
        return self.store.apply_batch(transitions, presence, within)


def saved(store: AlertStore) -> dict[str, Any]:
    """What the worker committed: cursor, rule state and flapping state (as data)."""
    db = sqlite3.connect(store.path)
    try:
        return {
            "cursor": db.execute("SELECT last_id FROM rule_cursor").fetchall(),
            "rules": {d: json.loads(s) for d, s in db.execute("SELECT * FROM rule_state")},
            "flaps": {f: json.loads(s) for f, s in db.execute("SELECT * FROM flap_state")},
        }
    finally:
        db.close()


def write_journal(path: Path, items: Items) -> int:
    """The journal the edge would write for these messages (status ones among them)."""
    journal = Journal(path)
    n = 0
    for i, row in enumerate(journal_rows(items)):
        _id, device, kind, stream, ts, received, _seq, _event, _flag, payload = row
        body: Body = {"ts": round(ts * 1000), **json.loads(payload)}
        if i % 17 == 16:  # now and then a device going offline or coming back
            stream, body = "status", {"ts": body["ts"], "state": ("offline", "online")[i % 2]}
        r = decode(topic_for("y", kind, device, stream), json.dumps(body).encode(), received)
        if isinstance(r, Reading):
            journal.write_batch([r], [])
            n += 1
    journal.close()
    return n


def run_both(
    tmp: Path, rules: list[Rule], items: Items, swaps: dict[int, int], batch: int
) -> list[tuple[list[Transition], list[Presence]]]:
    """Both workers over the same journal, compared after every batch; what the fast one
    handed the store, batch by batch."""
    journal = tmp / "journal.db"
    n = write_journal(journal, items)
    clock = FakeClock(T0)
    workers: list[RulesWorker] = []
    stores: list[Recording] = []
    for fast in (False, True):
        store = Recording(AlertStore(tmp / f"alerts-{fast}.db", clock=clock))
        gate = FlapGate(threshold=2, window_s=120, clock=clock)
        worker = RulesWorker(
            journal,
            store,
            lambda: RuleEngine(rules, registry(), clock, max_unregistered=1, tz=TZ),
            community="y",
            gate=gate,
            batch_rows=batch,
            clock=clock,
            fast=fast,
        )
        workers.append(worker)
        stores.append(store)
    full, quick = workers
    for k in range(n // batch + 2):
        if k in swaps:
            reg = _swapped(swaps[k])
            for w in workers:
                assert w.set_registry(reg)
        more = [w.step() for w in workers]
        assert more[0] == more[1]
        clock.advance(20.0)
        for w in workers:
            w.tick()
        assert stores[1].batches == stores[0].batches, k
        assert saved(stores[1].store) == saved(stores[0].store), k
    assert quick.position == full.position == n
    assert (quick.engine.out_of_order, quick.engine.errors) == (
        full.engine.out_of_order,
        full.engine.errors,
    )
    for w in workers:
        w.stop()
    return stores[1].batches


swap_plans = st.dictionaries(st.integers(0, 12), st.integers(0, 3), max_size=3)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_files(), st.lists(steps(), min_size=20, max_size=150), swap_plans, st.integers(1, 40))
def test_the_fast_worker_commits_what_the_straightforward_one_does(
    tmp_path_factory: Any, rule_dicts: list[dict[str, Any]], items: Items,
    swaps: dict[int, int], batch: int,
) -> None:  # fmt: skip
    run_both(tmp_path_factory.mktemp("w"), load(rule_dicts), items, swaps, batch)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps(), min_size=20, max_size=150), swap_plans, st.integers(1, 40))
def test_the_fast_worker_evaluates_the_pack_as_the_straightforward_one(
    tmp_path_factory: Any, items: Items, swaps: dict[int, int], batch: int
) -> None:
    run_both(tmp_path_factory.mktemp("w"), load_rules([builtin_pack()]), items, swaps, batch)


def test_a_threshold_lowered_by_a_swap_fires_on_both_paths(tmp_path: Path) -> None:
    """A plain case the generated ones build on: w0 at 90/min, at rest under r0's own level of
    100 until a swap lowers it to 85 between two batches; both paths then fire for it (the
    fast one looks w0 up again rather than keeping the band it had at rest)."""
    rule = {"id": "hr", **_BASE, "kind": "wearable", "type": "threshold", "metric": "heart_rate",
            "above": 100, "clear": 95, "override": "heart_rate_high"}  # fmt: skip
    items: Items = [(1.0, "w0", "telemetry", 0.05, {"heart_rate": 90, "battery": 80})] * 9
    fast = run_both(tmp_path, load([rule]), items, {2: 2}, 3)
    assert [(t.rule_id, t.device_id, t.action) for ts, _ in fast for t in ts] == [
        ("hr", "w0", "fire")
    ]

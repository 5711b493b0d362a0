"""The rules worker: journal rows in, alert changes + rule state + cursor out, in one transaction.

A "crash" here is a worker thrown away without a stop (nothing in memory survives) and a new one
built on the same files; the SIGKILL of a real process is in tests/integration."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from alerts import AlertStore
from alerts.noise import FlapGate
from base.sql import Db
from ingest.journal import Journal
from ingest.journal_pg import PgJournal
from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Device, Registry, Resident
from rules.engine import RuleEngine
from rules.model import CountRule, builtin_pack, load_rules
from rules.sources import PgRows
from rules.transitions import Transition
from rules.worker import Presence, RulesWorker
from tests.clock import FakeClock

T0 = 1_700_000_000.0
RULES = load_rules([builtin_pack()])


def registry() -> Registry:
    return Registry(
        "y",
        devices=[
            Device(device_id="w1", kind="wearable", compound="c3", building="b12",
                   unit="3-12-501", resident_id="r1"),
            Device(device_id="s1", kind="smoke", compound="c3", building="b12", unit="3-12-501"),
            Device(device_id="g1", kind="gate", compound="c3"),
        ],
        residents=[Resident(resident_id="r1", building="b12", unit="3-12-501")],
    )  # fmt: skip


class World:
    """A journal, an alert store and a worker over them, on a fake clock. With the alert store
    on PostgreSQL, the journal is there too (as ``JIAYUAN_DATABASE_URL`` has it): the worker
    reads it through :class:`rules.sources.PgRows`, its cursors committed with the alerts."""

    opened: ClassVar[list[AlertStore | PgJournal]] = []
    """Stores the worlds opened, closed after each test (a PostgreSQL store's pool)."""

    def __init__(
        self,
        tmp: Path,
        clock: FakeClock,
        store: AlertStore | CrashingStore | None = None,
        alerts: Path | str | None = None,
    ) -> None:
        self.tmp, self.clock = tmp, clock
        if store is None:
            store = AlertStore(alerts or tmp / "alerts.db", clock=clock)
            World.opened.append(store)
        self.store = store
        self.real = self.store.store if isinstance(self.store, CrashingStore) else self.store
        source: Path | PgRows = tmp / "journal.db"
        self.journal: Journal | PgJournal
        if isinstance(self.real.path, str):  # the alert store's URL
            self.journal = PgJournal(self.real.path)
            World.opened.append(self.journal)
            source = PgRows(self.real.path, range(self.journal.partitions))
        else:
            self.journal = Journal(tmp / "journal.db")
        self.gate = FlapGate(threshold=2, window_s=600, clock=clock)
        self.worker = RulesWorker(
            source,
            self.store,
            lambda: RuleEngine(RULES, registry(), clock=self.clock, max_unregistered=100),
            community="y",
            gate=self.gate,
            clock=clock,
            batch_rows=7,
        )

    def send(self, kind: str, device: str, stream: str, ts: float, **body: Any) -> None:
        payload = json.dumps({"ts": round(ts * 1000), **body}).encode()
        r = decode(topic_for("y", kind, device, stream), payload, ts + 1)
        assert isinstance(r, Reading), r
        self.journal.write_batch([r], [])

    def alerts(self, rule_id: str) -> list[tuple[str, str]]:
        items, _ = self.real.find(rule_id=rule_id, limit=500, sort="oldest")
        return [(a.device_id, a.status) for a in items]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while World.opened:
        World.opened.pop().close()


def test_each_fall_is_one_alert_and_the_cursor_moves_with_it(
    alerts_at: Path | str, tmp_path: Path, clock: FakeClock
) -> None:
    w = World(tmp_path, clock, alerts=alerts_at)
    for i in range(20):
        w.send("wearable", "w1", "telemetry", T0 + i, heart_rate=70, seq=i)
    w.send("wearable", "w1", "event", T0 + 30, event="fall", seq=100)
    w.worker.run_until_idle()
    assert w.alerts("wearable_fall") == [("w1", "firing")]
    assert w.worker.position == 21 and w.worker.evaluated == 21
    w.worker.run_until_idle()  # nothing new: nothing doubled
    assert len(w.alerts("wearable_fall")) == 1


class CrashingStore:
    """Passes writes to the real store until told to fail: then the transaction (alert changes,
    rule state, cursor) raises inside, after every write was made — and is rolled back."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store
        self.connection = store.connection
        World.opened.append(store)  # closed after the test
        self.fail: Exception | None = None

    def apply_batch(
        self,
        transitions: Sequence[Transition],
        presence: Sequence[Presence] = (),
        within: Callable[[Db], None] | None = None,
    ) -> Sequence[object]:
        def failing(db: Db) -> None:
            if within is not None:
                within(db)
            if self.fail is not None:
                raise self.fail

        return self.store.apply_batch(transitions, presence, failing)


def test_a_crash_before_the_commit_loses_no_alert_and_doubles_none(
    alerts_at: Path | str, tmp_path: Path, clock: FakeClock
) -> None:
    crashing = CrashingStore(AlertStore(alerts_at, clock=clock))
    w = World(tmp_path, clock, store=crashing)
    for n in range(3):
        w.send("wearable", "w1", "event", T0 + n * 600, event="fall", seq=n)
    w.worker.step()  # the first batch commits
    assert w.alerts("wearable_fall") == [("w1", "firing")]
    crashing.fail = RuntimeError("killed mid-transaction")
    for n in range(3, 10):
        w.send("wearable", "w1", "event", T0 + n * 600, event="fall", seq=n)
    with pytest.raises(RuntimeError):
        w.worker.step()
    assert len(w.alerts("wearable_fall")) == 1  # nothing of the failed batch is visible
    # "restart": a new worker on the same files, resuming from the committed cursor
    crashing.fail = None
    again = World(tmp_path, clock, store=crashing)
    again.worker.run_until_idle()
    assert again.worker.position == 10
    falls = again.real.find(rule_id="wearable_fall", limit=50)[0]
    assert len(falls) == 1 and falls[0].match_count == 10  # every fall matched exactly once


@pytest.mark.expect_errors(
    "jiayuan_rules_commit_failures_total", 'jiayuan_log_errors_total{logger="rules.worker"}'
)
def test_a_store_error_holds_the_cursor_says_so_and_the_alarm_is_raised_after(
    alerts_at: Path | str, tmp_path: Path, clock: FakeClock
) -> None:
    crashing = CrashingStore(AlertStore(alerts_at, clock=clock))
    w = World(tmp_path, clock, store=crashing)
    w.worker.retry_s = 0.01
    crashing.fail = sqlite3.OperationalError("database is locked")
    w.send("smoke", "s1", "event", T0, event="alarm", seq=1)
    w.worker.start()
    try:
        for _ in range(500):
            if w.worker.health().failing is not None:
                break
            w.worker._stop.wait(0.01)
        health = w.worker.health()
        assert health.failing == "OperationalError: database is locked"
        assert health.position == 0 and health.behind == 1
        assert w.alerts("smoke_alarm") == []
        crashing.fail = None
        for _ in range(500):
            if w.worker.position == 1:
                break
            w.worker.wake()
            w.worker._stop.wait(0.01)
    finally:
        w.worker.stop()
    assert w.alerts("smoke_alarm") == [("s1", "firing")]  # the engine state was not lost
    assert w.worker.health().failing is None
    w.send("smoke", "s1", "event", T0 + 60, event="alarm_clear", seq=2)
    w.worker.run_until_idle()
    assert w.alerts("smoke_alarm") == [("s1", "resolved")]


def test_an_episode_under_way_continues_after_a_restart(
    alerts_at: Path | str, tmp_path: Path, clock: FakeClock
) -> None:
    w = World(tmp_path, clock, alerts=alerts_at)
    for m in range(7):  # heart rate high for 6 minutes
        w.send("wearable", "w1", "telemetry", T0 + m * 60, heart_rate=140, seq=m)
    w.worker.run_until_idle()
    assert w.alerts("wearable_heart_rate_high") == []
    again = World(tmp_path, clock, alerts=alerts_at)  # restart
    for m in range(7, 11):  # ... and 4 more: ten minutes in all
        again.send("wearable", "w1", "telemetry", T0 + m * 60, heart_rate=140, seq=m)
    again.worker.run_until_idle()
    assert again.alerts("wearable_heart_rate_high") == [("w1", "firing")]
    (a,) = again.real.find(rule_id="wearable_heart_rate_high")[0]
    assert a.started_at == T0  # the episode's start, from before the restart


def test_count_windows_and_absence_timers_survive_a_restart(
    alerts_at: Path | str, tmp_path: Path, clock: FakeClock
) -> None:
    w = World(tmp_path, clock, alerts=alerts_at)
    w.send("wearable", "w1", "telemetry", T0, heart_rate=70, seq=1)
    w.send("gate", "g1", "event", T0, event="denied", seq=1)
    w.send("gate", "g1", "event", T0 + 10, event="denied", seq=2)
    w.worker.run_until_idle()
    again = World(tmp_path, clock, alerts=alerts_at)  # restart within the count window
    rule = next(r for r in RULES if r.id == "gate_denied_repeated")
    assert isinstance(rule, CountRule)
    for i in range(rule.threshold - 2):  # the two denied cards from before still count
        again.send("gate", "g1", "event", T0 + 20 + i, event="denied", seq=3 + i)
    again.worker.run_until_idle()
    assert again.alerts("gate_denied_repeated") == [("g1", "firing")]
    clock.advance(20 * 60)
    again = World(
        tmp_path, clock, alerts=alerts_at
    )  # restart 20 minutes after the wearable was last heard
    again.worker.tick()
    assert again.alerts("wearable_silent") == []
    clock.advance(10 * 60 + 2)  # 30 minutes after it was heard, not 30 after the restart
    again.worker.tick()
    assert again.alerts("wearable_silent") == [("w1", "firing")]


def test_flapping_state_survives_a_restart(
    alerts_at: Path | str, tmp_path: Path, clock: FakeClock
) -> None:
    w = World(tmp_path, clock, alerts=alerts_at)
    seq = 0
    for _ in range(3):  # more clears than the gate's threshold (2) within its window
        for ev in ("alarm", "alarm_clear"):
            seq += 1
            w.send("smoke", "s1", "event", clock.advance(10), event=ev, seq=seq)
            w.worker.run_until_idle()
    assert w.gate.flapping("smoke_alarm:s1")
    assert w.alerts("smoke_alarm")[-1] == ("s1", "firing")  # held open
    again = World(tmp_path, clock, alerts=alerts_at)
    assert again.gate.flapping("smoke_alarm:s1")
    clock.advance(601)
    again.worker.tick()  # quiet for the window: the held clear resolves it
    assert again.alerts("smoke_alarm")[-1] == ("s1", "resolved")


def test_devices_not_in_the_registry_are_bounded_and_forgotten(
    alerts_at: Path | str, tmp_path: Path, clock: FakeClock
) -> None:
    w = World(tmp_path, clock, alerts=alerts_at)
    for i in range(300):  # the engine keeps at most 100 of them
        w.send("smoke", f"x{i}", "event", T0 + i, event="alarm", seq=1)
    w.worker.run_until_idle()
    eng = w.worker.engine
    assert len(eng._unregistered) == 100
    assert eng.export_state("x0") is None and eng.export_state("x299") is not None
    with w.real.connection() as db:
        saved = db.execute("SELECT count(*) FROM rule_state").fetchone()[0]
    assert saved <= 100 + 3
    clock.advance(86_400 + 400)
    w.worker.tick()
    assert len(w.worker.engine._unregistered) == 0


def test_retention_on_postgresql_keeps_every_day_the_rules_have_not_evaluated(
    pg_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """Ids are not commit-ordered on PostgreSQL, so retention's bound is the smallest id still
    unevaluated in any partition (``PgRows.keep_after``), not the cursors' ids."""
    w = World(tmp_path, clock, alerts=pg_url)
    assert isinstance(w.journal, PgJournal)
    for i in range(5):
        w.send("wearable", "w1", "telemetry", T0 + i, heart_rate=70, seq=i)
    w.worker.run_until_idle()
    day2 = T0 + 2 * 86_400
    for i in range(3):
        w.send("wearable", "w1", "telemetry", day2 + i, heart_rate=70, seq=10 + i)
    w.send("wearable", "w1", "event", day2 + 10, event="fall", seq=20)
    keep = w.worker.source.keep_after()
    assert keep == 5  # the first unevaluated row is 6
    assert w.journal.prune(T0 + 30 * 86_400, keep_after=keep) == 5  # the evaluated day only
    assert w.journal.count_readings() == 4
    w.worker.run_until_idle()  # what was kept is evaluated: the fall is alerted
    assert w.alerts("wearable_fall") == [("w1", "firing")]
    assert w.worker.source.keep_after() == 9  # nothing unevaluated: the newest id
    assert w.journal.prune(T0 + 30 * 86_400, keep_after=9) == 4


def _reading(kind: str, device: str, stream: str, ts: float, **body: Any) -> Reading:
    payload = json.dumps({"ts": round(ts * 1000), **body}).encode()
    r = decode(topic_for("y", kind, device, stream), payload, ts + 1)
    assert isinstance(r, Reading), r
    return r


def _until(done: Callable[[], bool], worker: RulesWorker) -> bool:
    for _ in range(1000):  # generous: a loaded machine
        if done():
            return True
        worker._stop.wait(0.01)
    return done()


def test_a_fall_wakes_a_gathering_worker_and_telemetry_an_idle_one(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The pipeline hands each commit to :meth:`RulesWorker.committed`: telemetry alone wakes a
    worker that waits for rows, but one already gathering a stream's rows (``gather_s``) is
    left to gather; a fall in a commit wakes it at once, whatever it is doing."""
    w = World(tmp_path, clock)
    w.worker.gather_s = w.worker.tick_s = 3600.0  # only a wake-up makes it step in this test
    w.worker.hold_s = 0
    real_step = w.worker.step
    during: list[Reading] = []

    def step(*, hold: bool = False) -> bool:
        more = real_step(hold=hold)
        while during:  # committed while the worker was stepping: it gathers from now on
            r = during.pop()
            w.journal.write_batch([r], [])
            w.worker.committed([r])
        return more

    w.worker.step = step  # type: ignore[method-assign]
    w.worker.start()
    try:
        assert _until(lambda: w.worker._idle, w.worker)
        first = _reading("wearable", "w1", "telemetry", T0, heart_rate=70, seq=1)
        w.journal.write_batch([first], [])
        during.append(_reading("wearable", "w1", "telemetry", T0 + 1, heart_rate=70, seq=2))
        w.worker.committed([first])  # idle: woken
        assert _until(lambda: w.worker.position == 1, w.worker)
        # the second row is being gathered: no wake-up, no step until gather_s
        assert _until(lambda: w.worker._pending and not w.worker._idle, w.worker)
        fall = _reading("wearable", "w1", "event", T0 + 2, event="fall", seq=3)
        w.journal.write_batch([fall], [])
        w.worker.committed([fall])
        assert _until(lambda: w.worker.position == 3, w.worker)
    finally:
        w.worker.stop()
    assert w.alerts("wearable_fall") == [("w1", "firing")]

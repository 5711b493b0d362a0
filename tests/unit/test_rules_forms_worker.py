"""The newer rule forms through the rules worker and the alert store, across restarts; and the
verification window through the dispatcher on a fake clock: an alarm's first page goes out at
exactly the end of the window the rule file states, never later, and a cancelled fall is
recorded, resolved and never paged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alerts import AlertStore
from alerts.noise import FlapGate
from ingest.journal import Journal
from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Device, Registry, Resident
from rules.baselines import Baselines, HourBaseline
from rules.engine import RuleEngine
from rules.model import EventRule, Rule, builtin_pack, load_rules
from rules.worker import RulesWorker
from tests.alerting import (
    RULES,
    T0,
    TZ,
    FakeClock,
    FakeSender,
    community,
    dispatcher,
    notes,
    settle,
)


def registry() -> Registry:
    return Registry(
        "y",
        devices=[
            Device(device_id="w1", kind="wearable", compound="c3", building="b12",
                   unit="3-12-501", resident_id="r1"),
            Device(device_id="s1", kind="smoke", compound="c3", building="b12", unit="3-12-501"),
        ],
        residents=[Resident(resident_id="r1", building="b12", unit="3-12-501")],
    )  # fmt: skip


SPEC = ("heart_rate", 14, 7)
FLAT = Baselines(TZ, T0, {("w1", SPEC): [HourBaseline(h, 70.0, 4.0, 14) for h in range(24)]})


class World:
    """A journal, an alert store and a rules worker with the built-in pack, on a fake clock."""

    def __init__(self, tmp: Path, clock: FakeClock, rules: list[Rule] = RULES) -> None:
        self.clock = clock
        self.journal = Journal(tmp / "journal.db")
        self.store = AlertStore(tmp / "alerts.db", clock=clock)
        self.worker = RulesWorker(
            tmp / "journal.db",
            self.store,
            lambda: RuleEngine(rules, registry(), clock=clock, tz=TZ),
            community="y",
            gate=FlapGate(threshold=3, window_s=600, clock=clock),
            clock=clock,
            baselines=lambda now: FLAT,
        )
        self.seq = 0

    def send(self, kind: str, device: str, stream: str, ts: float, **body: Any) -> None:
        self.seq += 1
        payload = json.dumps({"ts": round(ts * 1000), "seq": self.seq, **body}).encode()
        r = decode(topic_for("y", kind, device, stream), payload, ts + 1)
        assert isinstance(r, Reading), r
        self.journal.write_batch([r], [])
        self.worker.run_until_idle()

    def alerts(self, rule_id: str) -> list[tuple[str, str]]:
        items, _ = self.store.find(rule_id=rule_id, limit=50, sort="oldest")
        return [(a.device_id, a.status) for a in items]


def test_a_fall_cancelled_after_a_restart_within_its_window_is_resolved_unpaged(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    w = World(tmp_path, clock)
    w.seq = 100
    w.send("wearable", "w1", "event", T0, event="fall")
    (a,) = w.store.find(rule_id="wearable_fall")[0]
    assert a.status == "firing" and a.page_at == T0 + 30
    w.store.close()
    again = World(tmp_path, clock)  # restart inside the window
    again.seq = 200
    again.send("wearable", "w1", "event", T0 + 20, event="fall_cancelled")
    assert again.alerts("wearable_fall") == [("w1", "resolved")]
    (entry,) = [h for h in again.store.get(a.id).history if h.action == "auto_resolved"]
    assert "cancelled on the device (fall_cancelled) 20 s after" in entry.note
    assert "nobody was paged" in entry.note


def test_a_cancel_of_a_later_fall_leaves_an_alert_paged_before_open(tmp_path: Path) -> None:
    w = World(tmp_path, FakeClock())
    w.send("wearable", "w1", "event", T0, event="fall")  # nobody cancels: paged at T0 + 30
    w.send("wearable", "w1", "event", T0 + 120, event="fall")
    w.send("wearable", "w1", "event", T0 + 125, event="fall_cancelled")
    assert w.alerts("wearable_fall") == [("w1", "firing")]
    (a,) = w.store.find(rule_id="wearable_fall")[0]
    assert "the alert stays open" in notes_of(w.store, a.id)


def test_a_combination_and_a_baseline_episode_continue_after_a_restart(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    w = World(tmp_path, clock)
    for m in range(8):  # heart rate 115 at rest: 45 above her baseline of 70
        w.send("wearable", "w1", "telemetry", T0 + m * 60, heart_rate=115, steps=500)
    assert w.alerts("wearable_heart_rate_high_at_rest") == []
    w.store.close()
    again = World(tmp_path, clock)  # restart: condition states come back from rule_state
    assert again.worker.engine.baselines is FLAT
    for m in range(8, 16):
        again.send("wearable", "w1", "telemetry", T0 + m * 60, heart_rate=115, steps=500)
    assert again.alerts("wearable_heart_rate_high_at_rest") == [("w1", "firing")]
    (combo,) = again.store.find(rule_id="wearable_heart_rate_high_at_rest")[0]
    assert combo.started_at == T0 + 10 * 60  # steps unchanged for 10 minutes, from before
    assert again.alerts("wearable_heart_rate_above_baseline") == [("w1", "firing")]
    (base,) = again.store.find(rule_id="wearable_heart_rate_above_baseline")[0]
    assert base.started_at == T0  # the episode began before the restart
    again.send("wearable", "w1", "telemetry", T0 + 17 * 60, heart_rate=72, steps=520)
    assert again.alerts("wearable_heart_rate_high_at_rest") == [("w1", "resolved")]
    assert again.alerts("wearable_heart_rate_above_baseline") == [("w1", "resolved")]


def test_a_pre_alarm_is_recorded_and_resolved_with_the_reason(tmp_path: Path) -> None:
    rules = load_rules([builtin_pack()])
    smoke = next(r for r in rules if r.id == "smoke_alarm")
    persisting = smoke.model_copy(update={"persist": 10.0})
    w = World(tmp_path, FakeClock(), [persisting])
    w.send("smoke", "s1", "event", T0, event="alarm")
    w.send("smoke", "s1", "event", T0 + 3, event="alarm_clear")
    (a,) = w.store.find(rule_id="smoke_alarm")[0]
    assert a.status == "resolved" and a.page_at == T0 + 10
    assert "did not persist 10 s" in notes_of(w.store, a.id)


def notes_of(store: AlertStore, alert_id: int) -> str:
    return " | ".join(h.note for h in store.get(alert_id).history)


def test_an_alarm_pages_at_exactly_the_end_of_its_stated_window_never_later(
    tmp_path: Path,
) -> None:
    fall = next(r for r in RULES if r.id == "wearable_fall")
    assert isinstance(fall, EventRule) and fall.signal == "alarm"
    assert fall.wait == 30  # what the rule file states
    clock, sender = FakeClock(), FakeSender()
    eng = RuleEngine(RULES, community(), clock=clock, tz=TZ)
    with dispatcher(tmp_path / "alerts.db", clock, sender) as d:

        def fall_at(device: str, body: dict[str, Any]) -> int:
            payload = json.dumps({"ts": round(clock() * 1000), **body}).encode()
            r = decode(topic_for("y", "wearable", device, "event"), payload, clock())
            assert isinstance(r, Reading)
            (t,) = eng.evaluate(r)
            change = d.store.apply(t)
            assert change is not None
            settle(d)
            return change.alert.id

        alert_id = fall_at("wr-1", {"event": "fall"})
        assert sender.sent == []  # recorded at once, not paged yet
        assert "paging waits 30 s" in notes(d, alert_id, "raised")[0]
        clock.advance(29.9)
        d.poll()
        settle(d)
        assert sender.sent == []
        clock.advance(0.1)  # the window's end, exactly
        d.poll()
        settle(d)
        assert [url for url, _, _ in sender.sent] == ["fake://care-1"]

        # the same on another wearer, cancelled on the wearable: never paged
        cancelled = fall_at("wr-3", {"event": "fall"})
        clock.advance(8)
        fall_at("wr-3", {"event": "fall_cancelled"})
        clock.advance(600)
        d.poll()
        settle(d)
        assert sender.to("care-3") == []
        a = d.store.get(cancelled)
        assert a.status == "resolved" and a.resolved_by == "rule"
        assert "nobody was paged" in notes(d, cancelled, "auto_resolved")[0]


def test_an_alert_store_of_schema_2_gains_page_at_and_keeps_its_alerts(tmp_path: Path) -> None:
    import sqlite3

    from alerts.db import SCHEMA

    old = SCHEMA  # the tables as first created; migrate() adds the newer columns
    assert "page_at" not in old
    db = sqlite3.connect(tmp_path / "alerts.db")
    db.executescript(old)
    db.execute(
        "INSERT INTO alerts (fingerprint, rule_id, device_id, kind, severity, severity_rank,"
        " signal, signal_rank, route, summary, status, labels, started_at, last_match_at,"
        " raised_at, updated_at) VALUES ('f:w1', 'f', 'w1', 'wearable', 'critical', 0,"
        " 'alarm', 0, 'caretaker', 'Fall', 'firing', '{}', 1, 1, 1, 1)"
    )
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    store = AlertStore(tmp_path / "alerts.db")
    (a,) = store.find()[0]
    assert a.rule_id == "f" and a.page_at is None
    store.close()

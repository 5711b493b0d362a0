"""The alert lifecycle with a fake clock: open, rematch, acknowledge, resolve, auto-resolve,
offline, history, restarts, refusals."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts import AlertChange, AlertNotFound, AlertStore, InvalidTransition
from rules.transitions import Transition
from tests.clock import FakeClock as Clock


def fire(
    device: str = "w-1", rule: str = "fall", at: float = 1_699_999_990.0, **kw: Any
) -> Transition:
    base: dict[str, Any] = {
        "kind": "wearable",
        "severity": "critical",
        "signal": "alarm",
        "route": "caretaker",
        "summary": "Fall detected",
        "labels": {"community": "y", "building": "b3", "unit": "3-2-501", "resident_id": "r-9"},
    }
    base.update(kw)
    return Transition(action="fire", rule_id=rule, device_id=device, at=at, **base)


def clear(device: str = "w-1", rule: str = "fall", at: float = 1_700_000_100.0) -> Transition:
    return Transition(
        action="clear",
        rule_id=rule,
        device_id=device,
        kind="wearable",
        severity="critical",
        signal="alarm",
        route="caretaker",
        at=at,
        summary="Fall cleared",
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(alerts_at: Path | str, clock: Clock) -> Iterator[AlertStore]:
    s = AlertStore.open(alerts_at, clock=clock)
    yield s
    s.close()


def test_fire_opens_a_firing_alert(store: AlertStore, clock: Clock) -> None:
    change = store.apply(fire(value=None, late=True))
    assert change is not None and change.action == "raised"
    a = change.alert
    assert (a.status, a.fingerprint, a.rule_id) == ("firing", "fall:w-1", "fall")
    assert a.started_at == 1_699_999_990.0 and a.raised_at == clock.t == a.updated_at
    assert a.late and not a.offline and a.match_count == 1
    assert a.labels["building"] == "b3" and a.building == "b3"
    assert change.entry.by == "rule" and change.entry.note == "raised from late readings"
    assert store.counts_by_status() == {"firing": 1, "acknowledged": 0, "resolved": 0}


def test_rematch_updates_the_open_alert_instead_of_opening_another(
    store: AlertStore, clock: Clock
) -> None:
    first = store.apply(fire(rule="hr_high", value=130.0, severity="major"))
    clock.advance(60)
    again = store.apply(fire(rule="hr_high", at=1_700_000_050.0, value=142.0, severity="critical"))
    assert first is not None and again is not None
    assert again.action == "rematched" and again.alert.id == first.alert.id
    a = again.alert
    assert a.match_count == 2 and a.value == 142.0 and a.severity == "critical"
    assert a.started_at == 1_699_999_990.0 and a.last_match_at == 1_700_000_050.0
    assert a.updated_at == clock.t and a.raised_at == first.alert.raised_at
    assert "severity major → critical" in again.entry.note
    items, total = store.find()
    assert total == 1 and len(items) == 1
    # a late match older than the latest neither moves last_match_at nor replaces the value
    late = store.apply(fire(rule="hr_high", at=1_699_999_000.0, value=99.0))
    assert late is not None and late.alert.value == 142.0
    assert late.alert.started_at == 1_699_999_000.0


def test_value_never_reaches_the_log(store: AlertStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    change = store.apply(fire(rule="hr_high", value=187.25))
    assert change is not None
    store.apply(fire(rule="hr_high", value=191.5, at=1_700_000_000.0))
    assert "187" not in caplog.text and "191" not in caplog.text
    assert "187" not in repr(change.alert)


def test_acknowledge_then_resolve_with_history(store: AlertStore, clock: Clock) -> None:
    opened = store.apply(fire())
    assert opened is not None
    aid = opened.alert.id
    t_ack = clock.advance(30)
    ack = store.acknowledge(aid, "cg-7", "on my way")
    assert ack is not None and ack.alert.status == "acknowledged"
    assert (ack.alert.acknowledged_by, ack.alert.acknowledged_at) == ("cg-7", t_ack)
    t_res = clock.advance(300)
    res = store.resolve(aid, "cg-7", "resident fine, helped up")
    assert res is not None and res.alert.status == "resolved"
    assert (res.alert.resolved_by, res.alert.resolved_at) == ("cg-7", t_res)
    history = store.get(aid).history
    assert [(h.action, h.by, h.note) for h in history] == [
        ("raised", "rule", ""),
        ("acknowledged", "cg-7", "on my way"),
        ("resolved", "cg-7", "resident fine, helped up"),
    ]
    assert [h.at for h in history] == [opened.alert.raised_at, t_ack, t_res]
    assert store.counts_by_status() == {"firing": 0, "acknowledged": 0, "resolved": 1}


def test_rematch_keeps_an_acknowledged_alert_acknowledged(store: AlertStore) -> None:
    opened = store.apply(fire())
    assert opened is not None
    store.acknowledge(opened.alert.id, "cg-7")
    again = store.apply(fire(at=1_700_000_010.0))
    assert again is not None and again.alert.status == "acknowledged"
    assert again.alert.match_count == 2


def test_clear_auto_resolves_by_rule(store: AlertStore, clock: Clock) -> None:
    opened = store.apply(fire(rule="hr_high"))
    assert opened is not None
    store.acknowledge(opened.alert.id, "cg-7")
    clock.advance(120)
    cleared = store.apply(clear(rule="hr_high", at=1_700_000_080.0))
    assert cleared is not None and cleared.action == "auto_resolved"
    a = cleared.alert
    assert (a.status, a.resolved_by, a.resolved_at, a.ended_at) == (
        "resolved",
        "rule",
        clock.t,
        1_700_000_080.0,
    )
    assert cleared.entry.by == "rule" and "cleared" in cleared.entry.note
    # the next fire opens a new alert: the old one is closed history
    reopened = store.apply(fire(rule="hr_high", at=1_700_000_500.0))
    assert reopened is not None and reopened.action == "raised"
    assert reopened.alert.id != a.id


def test_clear_without_open_alert_or_older_than_latest_match_does_nothing(
    store: AlertStore,
) -> None:
    assert store.apply(clear()) is None
    opened = store.apply(fire(at=1_700_000_000.0))
    assert opened is not None
    assert store.apply(clear(at=1_699_999_000.0)) is None
    assert store.get(opened.alert.id).status == "firing"


def test_offline_never_resolves_and_sets_the_flag(store: AlertStore, clock: Clock) -> None:
    opened = store.apply(fire())
    other = store.apply(fire(device="w-2"))
    assert opened is not None and other is not None
    changes = store.set_offline("w-1", True, at=1_700_000_005.0)
    assert [c.action for c in changes] == ["offline"]
    a = changes[0].alert
    assert a.status == "firing" and a.offline and a.offline_since == 1_700_000_005.0
    assert changes[0].entry.by == "system"
    assert not store.get(other.alert.id).offline
    assert store.set_offline("w-1", True, at=1_700_000_006.0) == []  # no change, no entry
    assert store.set_offline("w-7", False, at=1_700_000_006.0) == []  # never offline: no-op
    assert store.is_offline("w-1") and not store.is_offline("w-7")
    # the rule does not clear while the device is silent; an alert raised meanwhile is flagged
    raised = store.apply(fire(rule="sos"))
    assert raised is not None and raised.alert.offline
    # an older state (delivered late) is ignored
    assert store.set_offline("w-1", False, at=1_700_000_000.0) == []
    back = store.set_offline("w-1", False, at=1_700_000_200.0)
    assert sorted(c.alert.id for c in back) == sorted([opened.alert.id, raised.alert.id])
    assert all(c.action == "online" and not c.alert.offline for c in back)
    assert store.get(opened.alert.id).status == "firing"
    assert [h.action for h in store.get(opened.alert.id).history] == ["raised", "offline", "online"]


def test_invalid_transitions(store: AlertStore) -> None:
    with pytest.raises(AlertNotFound, match="alert 99 not found"):
        store.acknowledge(99, "cg-7")
    with pytest.raises(AlertNotFound):
        store.resolve(99, "cg-7")
    with pytest.raises(AlertNotFound):
        store.get(99)
    opened = store.apply(fire())
    assert opened is not None
    aid = opened.alert.id
    assert store.acknowledge(aid, "cg-7") is not None
    assert store.acknowledge(aid, "cg-7") is None  # the same person again: a retried request
    with pytest.raises(InvalidTransition, match="acknowledged by cg-7") as e:
        store.acknowledge(aid, "g-2")
    assert (e.value.status, e.value.by) == ("acknowledged", "cg-7")
    assert store.resolve(aid, "g-2") is not None
    assert store.resolve(aid, "g-2") is None
    with pytest.raises(InvalidTransition, match="resolved by g-2; cannot resolve"):
        store.resolve(aid, "cg-7")
    with pytest.raises(InvalidTransition, match="cannot acknowledge"):
        store.acknowledge(aid, "cg-7")
    with pytest.raises(ValueError, match="by"):
        store.resolve(aid, " ")
    assert [h.action for h in store.get(aid).history] == ["raised", "acknowledged", "resolved"]


def test_resolved_by_rule_cannot_be_resolved_by_a_person(store: AlertStore) -> None:
    opened = store.apply(fire())
    assert opened is not None
    store.apply(clear())
    with pytest.raises(InvalidTransition, match="by rule") as e:
        store.resolve(opened.alert.id, "cg-7")
    assert e.value.at is not None


def test_notes_are_history_in_any_status(store: AlertStore) -> None:
    opened = store.apply(fire())
    assert opened is not None
    store.resolve(opened.alert.id, "cg-7")
    note = store.add_note(opened.alert.id, "cg-7", "family informed")
    assert note.action == "note" and note.alert.status == "resolved"
    sent = store.add_note(opened.alert.id, "system", "sms to cg-7", action="notified")
    assert sent.entry.action == "notified"


def test_survives_reopening_the_store(alerts_at: Path | str, clock: Clock) -> None:
    path = alerts_at
    s1 = AlertStore(path, clock=clock)
    a = s1.apply(fire())
    b = s1.apply(fire(device="w-2"))
    assert a is not None and b is not None
    s1.acknowledge(a.alert.id, "cg-7", "coming")
    s1.set_offline("w-2", True, at=1_700_000_001.0)
    s1.close()

    s2 = AlertStore(path, clock=clock)
    try:
        assert s2.counts_by_status() == {"firing": 1, "acknowledged": 1, "resolved": 0}
        assert [x.id for x in s2.open_alerts()] == [b.alert.id, a.alert.id]  # firing first
        again = s2.apply(fire(at=1_700_000_020.0))
        assert again is not None and again.action == "rematched" and again.alert.id == a.alert.id
        assert s2.get(a.alert.id).history[1].note == "coming"
        assert s2.is_offline("w-2") and s2.get(b.alert.id).offline
    finally:
        s2.close()


def test_one_open_alert_per_fingerprint_is_enforced_by_the_database(store: AlertStore) -> None:
    store.apply(fire())
    with store.connection() as db, pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        db.execute(
            "INSERT INTO alerts (fingerprint, rule_id, device_id, kind, severity,"
            " severity_rank, signal, signal_rank, route, summary, status, labels,"
            " started_at, last_match_at, raised_at, updated_at)"
            " VALUES ('fall:w-1','fall','w-1','wearable','critical',0,'alarm',0,"
            " 'caretaker','x','acknowledged','{}',0,0,0,0)"
        )


def test_list_filters_sorts_and_pages(store: AlertStore, clock: Clock) -> None:
    store.apply(
        fire(
            device="s-1",
            rule="smoke",
            kind="smoke",
            severity="critical",
            labels={"building": "b1"},
            at=1_700_000_030.0,
        )
    )
    store.apply(fire(device="w-1", rule="hr_low", severity="major", at=1_700_000_010.0))
    store.apply(fire(device="w-2", rule="batt", severity="warning", signal="trouble"))
    store.apply(
        fire(device="w-3", rule="fault", severity="critical", signal="trouble", at=1_700_000_000.0)
    )
    done = store.apply(fire(device="w-4", rule="fall", severity="critical"))
    assert done is not None
    store.resolve(done.alert.id, "cg-7")
    items, total = store.find()
    assert total == 5
    assert [a.rule_id for a in items] == ["smoke", "hr_low", "fault", "batt", "fall"]
    assert store.find(status="resolved")[1] == 1
    assert store.find(status=["firing", "acknowledged"])[1] == 4
    assert store.find(open_only=True)[1] == 4
    assert store.find(severity=["critical"])[1] == 3
    assert [a.device_id for a in store.find(building="b1")[0]] == ["s-1"]
    assert store.find(kind="smoke")[1] == 1
    assert store.find(device_id="w-2")[0][0].rule_id == "batt"
    assert store.find(rule_id="hr_low")[1] == 1
    assert store.find(since=1_700_000_000.0, until=1_700_000_030.0)[1] == 2
    page, total = store.find(limit=2, offset=2)
    assert total == 5 and [a.rule_id for a in page] == ["fault", "batt"]
    assert store.find(sort="newest")[0][0].id == done.alert.id


@pytest.mark.expect_errors(
    "jiayuan_alert_subscriber_errors_total", 'jiayuan_log_errors_total{logger="alerts.lifecycle"}'
)
def test_subscribers_see_committed_changes_in_order_and_are_isolated(
    store: AlertStore, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[AlertChange] = []
    committed: list[str] = []

    def broken(change: AlertChange) -> None:
        raise RuntimeError("subscriber bug")

    def check_committed(change: AlertChange) -> None:
        # another connection sees the change already: delivered after commit
        with store.connection() as db:
            row = db.execute("SELECT status FROM alerts WHERE id = ?", (change.alert.id,))
            committed.append(row.fetchone()[0])

    store.subscribe(broken)
    store.subscribe(check_committed)
    unsubscribe = store.subscribe(seen.append)
    opened = store.apply(fire())
    assert opened is not None
    store.acknowledge(opened.alert.id, "cg-7")
    assert [c.action for c in seen] == ["raised", "acknowledged"]
    assert committed == ["firing", "acknowledged"]
    assert "subscriber bug" in caplog.text
    unsubscribe()
    store.resolve(opened.alert.id, "cg-7")
    assert len(seen) == 2


def test_a_subscriber_may_write_to_the_store(store: AlertStore) -> None:
    order: list[str] = []

    def escalate(change: AlertChange) -> None:
        order.append(change.action)
        if change.action == "raised":
            store.add_note(change.alert.id, "system", "paged cg-7", action="notified")

    store.subscribe(escalate)
    store.subscribe(lambda c: order.append("second:" + c.action))
    store.apply(fire())
    assert order == ["raised", "second:raised", "notified", "second:notified"]


def test_changes_since_replays_the_feed(store: AlertStore) -> None:
    opened = store.apply(fire())
    assert opened is not None
    ack = store.acknowledge(opened.alert.id, "cg-7")
    assert ack is not None
    replay = store.changes_since(opened.entry.id)
    assert [(c.entry.id, c.action, c.alert.status) for c in replay] == [
        (ack.entry.id, "acknowledged", "acknowledged")
    ]
    assert store.changes_since(ack.entry.id) == []

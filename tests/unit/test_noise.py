"""Noise on a fake clock: a flapping alert stays open instead of paging each toggle; trouble from
many devices of one building is one incident; an alarm never waits behind grouping."""

from __future__ import annotations

from pathlib import Path

from alerts.config import FlapConfig, GroupConfig
from alerts.noise import FlapGate
from tests.alerting import T0, FakeClock, FakeSender, clear, dispatcher, fire, notes, settle


def test_the_gate_holds_the_clears_of_a_flapping_alert_until_it_is_quiet() -> None:
    clock = FakeClock()
    gate = FlapGate(threshold=2, window_s=600, clock=clock)
    out = []
    for _ in range(2):
        out += gate.filter([fire("gate_held_open", "gate-C01-main", clock())])
        clock.advance(30)
        out += gate.filter([clear("gate_held_open", "gate-C01-main", clock())])
        clock.advance(30)
    assert [t.action for t in out] == ["fire", "clear", "fire", "clear"]
    gate.filter([fire("gate_held_open", "gate-C01-main", clock())])
    clock.advance(30)
    (flag,) = gate.filter([clear("gate_held_open", "gate-C01-main", clock())])
    assert flag.action == "fire" and flag.labels["flapping"] == "true"
    assert gate.flapping("gate_held_open:gate-C01-main")
    assert gate.filter([fire("gate_held_open", "gate-C01-main", clock())])[0].action == "fire"
    assert gate.filter([clear("gate_held_open", "gate-C01-main", clock())]) == []
    clock.advance(599)
    assert gate.tick() == []
    clock.advance(1)
    (released,) = gate.tick()
    assert released.action == "clear"
    assert not gate.flapping("gate_held_open:gate-C01-main")


def test_a_flapping_alert_stays_open_flagged_and_pages_no_more(tmp_path: Path) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(tmp_path / "alerts.db", clock, sender, flap=FlapConfig(threshold=2)) as d:

        def toggle() -> None:
            for t in d.filter([fire("gate_held_open", "gate-C01-main", clock())]):
                d.store.apply(t)
            settle(d)  # paged before it clears
            clock.advance(20)
            for t in d.filter([clear("gate_held_open", "gate-C01-main", clock())]):
                d.store.apply(t)
            clock.advance(20)
            settle(d)

        toggle()
        toggle()
        paged = len(sender.sent)
        assert paged == 2 * 2  # two raises, each to the compound's guard and the desk
        for _ in range(5):
            toggle()
        assert len(sender.sent) == paged + 2  # the third raise; then it stays open
        items, total = d.store.find(rule_id="gate_held_open")
        assert total == 3
        flapping = items[0]
        assert flapping.status == "firing" and flapping.labels["flapping"] == "true"
        assert any(
            n.startswith("flapping: fired and cleared more than 2 times")
            for n in notes(d, flapping.id)
        )
        clock.advance(600)
        for t in d.gate.tick():  # what the rules worker's tick does
            d.store.apply(t)
        settle(d)
        assert d.store.get(flapping.id).status == "resolved"


def test_trouble_from_many_devices_of_one_building_is_one_incident(tmp_path: Path) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(tmp_path / "alerts.db", clock, sender, group=GroupConfig(wait_s=60)) as d:
        ids = []
        for i in range(1, 7):  # the power goes in building B02: detectors fall silent
            change = d.store.apply(fire("smoke_silent", f"smk-B02-{i}", clock()))
            assert change is not None
            ids.append(change.alert.id)
            clock.advance(5)
        # an alarm in the same building meanwhile is paged at once, never grouped
        alarm = d.store.apply(fire("smoke_alarm", "smk-B02-7", clock()))
        assert alarm is not None
        settle(d)
        assert sender.sent and all("烟雾报警" in title for _, title, _ in sender.sent)
        assert d.timers.get(alarm.alert.id) is not None
        clock.advance(60)
        d.poll()
        settle(d)
        (incident,) = d.store.find(rule_id="building_trouble")[0]
        assert (incident.device_id, incident.route, incident.severity) == (
            "B02",
            "operator",
            "major",
        )
        operators = [b for u, _, b in sender.sent if u == "fake://ops-1"]
        assert len(operators) == 1 and "B02楼" in operators[0]
        for alert_id in ids:
            assert any("paged as one incident" in n for n in notes(d, alert_id, "notified"))
            assert d.timers.get(alert_id) is None
        # the devices come back: the incident resolves itself
        for i in range(1, 7):
            d.store.apply(clear("smoke_silent", f"smk-B02-{i}", clock()))
        clock.advance(30)
        d.poll()
        settle(d)
        assert d.store.get(incident.id).status == "resolved"


def test_a_lone_trouble_is_paged_after_the_group_wait(tmp_path: Path) -> None:
    clock, sender = FakeClock(T0), FakeSender()
    with dispatcher(tmp_path / "alerts.db", clock, sender, group=GroupConfig(wait_s=60)) as d:
        change = d.store.apply(fire("smoke_fault", "smk-101"))
        assert change is not None
        settle(d)
        assert sender.sent == []
        clock.advance(60)
        d.poll()
        settle(d)
        assert [u for u, _, _ in sender.sent] == ["fake://ops-1"]

"""Correlation across device kinds: two detectors confirm a fire, a smoke alarm reaches the
caretakers of the building's elderly residents, and a resident's alert in a unit with a smoke
alarm becomes critical."""

from __future__ import annotations

from pathlib import Path

from tests.alerting import NIGHT, FakeClock, FakeSender, dispatcher, fire, notes, settle


def test_two_detectors_in_alarm_on_one_floor_confirm_a_fire(alerts_at: Path | str) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        d.store.apply(fire("smoke_alarm", "smk-101"))
        settle(d)
        assert d.store.find(rule_id="fire_confirmed")[1] == 0
        d.store.apply(fire("smoke_alarm", "smk-201", clock()))  # another floor: not yet
        settle(d)
        assert d.store.find(rule_id="fire_confirmed")[1] == 0
        d.store.apply(fire("smoke_alarm", "smk-102", clock()))  # floor 1 again
        settle(d)
        (fire_alert,) = d.store.find(rule_id="fire_confirmed")[0]
        assert (fire_alert.device_id, fire_alert.severity, fire_alert.signal) == (
            "B01-F1",
            "critical",
            "alarm",
        )
        assert fire_alert.labels["devices"] == "smk-101,smk-102"
        assert fire_alert.labels["floor"] == "1"
        # the guards heard of the smoke alarms a moment ago: the confirmation is folded into
        # one message that goes out within the coalescing window
        clock.advance(15)
        d.notifier.kick()
        sender.wait(
            lambda: any("火警确认" in t for u, t, _ in sender.sent if u == "fake://sec-desk")
        )


def test_a_smoke_alarm_reaches_security_and_the_caretakers_of_the_buildings_elderly(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(NIGHT), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        change = d.store.apply(fire("smoke_alarm", "smk-201", clock()))
        assert change is not None
        settle(d)
        reached = {u.removeprefix("fake://") for u, _, _ in sender.sent}
        # the whole security roster, and at night the building's duty caretaker (who is also
        # the first caretaker on duty of r-1; r-2's only caretaker is off duty)
        assert reached == {"sec-C01", "sec-C02", "sec-desk", "care-night"}
        step = notes(d, change.alert.id, "notified")[0]
        assert "care-night (caretaker on duty for building B01)" in step


def test_a_fall_in_a_unit_with_a_smoke_alarm_is_marked_and_a_silent_wearable_becomes_critical(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        fall = d.store.apply(fire("wearable_fall", "wr-1"))
        silent = d.store.apply(fire("wearable_silent", "wr-2"))
        assert fall is not None and silent is not None
        settle(d)
        assert d.store.get(silent.alert.id).severity == "minor"
        d.store.apply(fire("smoke_alarm", "smk-102", clock()))  # r-2's home
        settle(d)
        raised = d.store.get(silent.alert.id)
        assert (raised.severity, raised.signal) == ("critical", "alarm")
        assert raised.labels["correlated"] == "smoke_alarm"
        assert d.store.get(fall.alert.id).labels.get("correlated") is None  # r-1: other unit
        assert "severity now critical: chain caretaker-critical from the first step" in notes(
            d, raised.id, "escalated"
        )
        clock.advance(15)  # care-2 was paged about the silent wearable a moment ago
        d.notifier.kick()
        sender.wait(
            lambda: any(
                "家中烟雾报警" in t and "紧急" in t
                for u, t, _ in sender.sent
                if u == "fake://care-2"
            )
        )
        # the other way round: the smoke alarm first, then the fall
        d.store.apply(fire("smoke_alarm", "smk-101", clock()))
        settle(d)
        assert d.store.get(fall.alert.id).labels["correlated"] == "smoke_alarm"

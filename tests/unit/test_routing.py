"""Routing: who is on duty (weekly shifts, local time, scope) and whom each selector names."""

from __future__ import annotations

from datetime import datetime, time

from alerts.model import Alert
from alerts.routing import Router, covers, on_duty, shift_active
from registry.cells import parse_shift
from tests.alerting import NIGHT, T0, TZ, community, labels, staff


def alert(device_id: str, route: str = "caretaker", rule_id: str = "wearable_fall") -> Alert:
    return Alert(
        id=1, fingerprint=f"{rule_id}:{device_id}", rule_id=rule_id, device_id=device_id,
        kind="wearable", severity="critical", signal="alarm", route=route,  # type: ignore[arg-type]
        summary="Fall detected", status="firing", labels=labels(device_id), started_at=T0,
        last_match_at=T0, raised_at=T0, updated_at=T0,
    )  # fmt: skip


def at(day: int, hh: int, mm: int = 0) -> datetime:
    """2026-11-23 is a Monday."""
    return datetime(2026, 11, 23 + day, hh, mm, tzinfo=TZ)


def test_a_shift_covers_its_days_and_hours_and_may_run_past_midnight() -> None:
    office = parse_shift("Mon-Fri 08:30-17:30")
    assert shift_active(office, at(0, 8, 30)) and shift_active(office, at(4, 17, 29))
    assert not shift_active(office, at(0, 17, 30)) and not shift_active(office, at(5, 10))
    night = parse_shift("Mon-Fri 22:00-06:00")
    assert shift_active(night, at(0, 23)) and shift_active(night, at(1, 5, 59))
    assert shift_active(night, at(5, 3))  # Friday's night runs into Saturday
    assert not shift_active(night, at(0, 3))  # Sunday night is not on the roster
    whole = parse_shift("Sat-Sun 00:00-24:00")
    assert whole.end == time(23, 59, 59) and shift_active(
        whole,
        at(
            6,
            23,
            59,
        ),
    )


def test_nobody_without_shifts_is_ever_off_duty_and_a_building_shift_covers_that_building() -> None:
    assert on_duty(staff("x", "operator"), at(6, 3))
    guard = staff("g", "security", ("daily 08:00-16:00@B01",))
    assert on_duty(guard, at(2, 9), "B01") and not on_duty(guard, at(2, 9), "B02")


def test_scope_by_buildings_and_compounds() -> None:
    guard = staff("g", "security", buildings=("B01", "B02"), compounds=("C01",))
    assert covers(guard, "C01", "B01") and not covers(guard, "C01", "B03")
    assert covers(guard, "C01", None)  # the compound's entrance gate
    assert not covers(guard, "C02", None)
    assert covers(staff("desk", "security"), "C09", "B99")


def test_the_residents_own_caretakers_on_duty_come_first_primary_first() -> None:
    router = Router(community(), TZ)
    a = alert("wr-1")
    by_day = router.resolve(["own_caretaker:1"], a, T0)
    assert [(t.staff_id, t.reason) for t in by_day] == [
        ("care-1", "the resident's primary caretaker, on duty")
    ]
    assert [t.staff_id for t in router.resolve(["own_caretakers"], a, T0)] == ["care-1", "care-2"]
    assert [t.staff_id for t in router.resolve(["own_caretaker:2"], a, T0)] == ["care-2"]
    # at night only the night caretaker of the three is on duty
    assert [t.staff_id for t in router.resolve(["own_caretaker:1"], a, NIGHT)] == ["care-night"]
    assert router.resolve(["own_caretaker:2"], a, NIGHT) == []


def test_the_buildings_duty_caretaker_and_the_elderly_residents_caretakers() -> None:
    router = Router(community(), TZ)
    smoke = alert("smk-101", route="security", rule_id="smoke_alarm")
    assert {t.staff_id for t in router.resolve(["building_caretaker"], smoke, T0)} == {
        "care-1",
        "care-2",
    }
    assert [t.staff_id for t in router.resolve(["building_caretaker"], smoke, NIGHT)] == [
        "care-night"
    ]
    elderly = router.resolve(["elderly_caretakers"], smoke, T0)
    assert [t.staff_id for t in elderly] == ["care-1", "care-2"]  # r-1's and r-2's primaries
    assert all("elderly resident in building B01" in t.reason for t in elderly)


def test_security_the_places_guards_before_the_desk_and_the_whole_roster() -> None:
    router = Router(community(), TZ)
    smoke = alert("smk-101", route="security", rule_id="smoke_alarm")
    assert [t.staff_id for t in router.resolve(["security"], smoke, T0)] == ["sec-C01", "sec-desk"]
    assert [t.staff_id for t in router.resolve(["security_desk"], smoke, T0)] == ["sec-desk"]
    roster = router.resolve(["security_roster"], smoke, T0)
    assert {t.staff_id for t in roster} == {"sec-C01", "sec-C02", "sec-desk"}
    gate = alert("gate-C01-main", route="security", rule_id="gate_forced")
    assert [t.staff_id for t in router.resolve(["security_local"], gate, T0)] == ["sec-C01"]


def test_duty_manager_by_shift_and_each_person_once() -> None:
    router = Router(community(), TZ)
    a = alert("wr-1")
    assert [t.staff_id for t in router.resolve(["manager"], a, T0)] == ["mgr-1"]
    assert [t.staff_id for t in router.resolve(["manager"], a, NIGHT)] == ["mgr-2"]
    both = router.resolve(["own_caretaker:1", "building_caretaker", "staff:ops-1"], a, T0)
    assert [t.staff_id for t in both] == ["care-1", "care-2", "ops-1"]
    assert both[0].reason.startswith("the resident's primary")  # the first reason wins
    assert both[0].channels == ("fake://care-1",)

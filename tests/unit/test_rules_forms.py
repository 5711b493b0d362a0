"""The newer rule forms in the engine, on a fake clock and in event time: time windows,
combinations (one device, one unit), verification and persistence windows, personal baselines;
and their rule-file errors naming the file, the rule and the field."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Device, Registry, Resident
from rules.baselines import Baselines, HourBaseline
from rules.engine import RuleEngine
from rules.model import RuleFileError, load_rules
from rules.transitions import Transition
from tests.clock import FakeClock

TZ = ZoneInfo("Asia/Shanghai")
MIDNIGHT = datetime(2026, 11, 25, 0, 0, tzinfo=TZ).timestamp()
"""Wednesday 25 November 2026, 00:00 in Lanzhou."""
BASE: dict[str, Any] = {"severity": "major", "signal": "alarm", "route": "caretaker",
                        "summary": "Test"}  # fmt: skip


def registry() -> Registry:
    return Registry(
        "y",
        devices=[
            Device(device_id="w1", kind="wearable", compound="c1", building="b1", unit="1-1-101",
                   resident_id="r1"),
            Device(device_id="s1", kind="smoke", compound="c1", building="b1", unit="1-1-101"),
            Device(device_id="w2", kind="wearable", compound="c1", building="b1", unit="1-1-102",
                   resident_id="r2"),
            Device(device_id="door", kind="gate", compound="c1", building="b1"),
            Device(device_id="main", kind="gate", compound="c1"),
        ],
        residents=[Resident(resident_id="r1", building="b1", unit="1-1-101"),
                   Resident(resident_id="r2", building="b1", unit="1-1-102")],
    )  # fmt: skip


def write(tmp_path: Path, *rules: dict[str, Any]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": list(rules)}, sort_keys=False), encoding="utf-8")
    return path


def engine(tmp_path: Path, *rules: dict[str, Any], now: float = MIDNIGHT) -> RuleEngine:
    return RuleEngine(
        load_rules([write(tmp_path, *rules)]), registry(), clock=FakeClock(now), tz=TZ
    )


def reading(
    kind: str, device: str, stream: str, ts: float, received: float | None = None, **body: Any
) -> Reading:
    payload = json.dumps({"ts": round(ts * 1000), **body}).encode()
    r = decode(topic_for("y", kind, device, stream), payload, ts if received is None else received)
    assert isinstance(r, Reading), r
    return r


def acts(out: list[Transition]) -> list[tuple[str, str]]:
    return [(t.action, t.device_id) for t in out]


# ------------------------------------------------------------------ time windows

NIGHT_DOOR: dict[str, Any] = {**BASE, "id": "night_door", "kind": "gate", "type": "event",
                              "events": ["granted"], "active": {"hours": "00:00-05:00"},
                              "where": {"building": True}}  # fmt: skip


def test_a_night_rule_fires_only_at_night_local_time_and_only_on_building_doors(
    tmp_path: Path,
) -> None:
    eng = engine(tmp_path, NIGHT_DOOR)
    at_2am, at_6am = MIDNIGHT + 2 * 3600, MIDNIGHT + 6 * 3600
    assert acts(eng.evaluate(reading("gate", "door", "event", at_2am, event="granted"))) == [
        ("fire", "door")
    ]
    assert eng.evaluate(reading("gate", "door", "event", at_6am, event="granted")) == []
    assert eng.evaluate(reading("gate", "main", "event", at_2am, event="granted")) == []
    # 02:00 UTC is 10:00 in Lanzhou: the window is local time
    utc_2am = MIDNIGHT + 8 * 3600 + 2 * 3600
    assert eng.evaluate(reading("gate", "door", "event", utc_2am, event="granted")) == []


def test_a_window_past_midnight_belongs_to_the_day_it_starts_on(tmp_path: Path) -> None:
    # Wednesday 22:00 to Thursday 05:00 only
    rule = {**NIGHT_DOOR, "active": {"days": ["wed"], "hours": "22:00-05:00"}}
    eng = engine(tmp_path, rule)

    def fires(hours: float) -> bool:
        r = reading("gate", "door", "event", MIDNIGHT + hours * 3600, event="granted")
        return bool(eng.evaluate(r))

    assert not fires(2)  # Wednesday 02:00 belongs to Tuesday night
    assert not fires(21.5)
    assert fires(23)  # Wednesday 23:00
    assert fires(24 + 4.5)  # Thursday 04:30, still Wednesday's night
    assert not fires(24 + 23)  # Thursday 23:00


def test_a_threshold_in_a_window_fires_inside_it_and_clears_outside(tmp_path: Path) -> None:
    rule = {**BASE, "id": "hr", "kind": "wearable", "type": "threshold", "metric": "heart_rate",
            "above": 120, "clear": 110, "for": "10m",
            "active": {"hours": "22:00-06:00"}}  # fmt: skip
    eng = engine(tmp_path, rule)
    start = MIDNIGHT + 21.75 * 3600  # 21:45: high from before the window opens
    out = [
        t
        for m in range(0, 31)
        for t in eng.evaluate(
            reading("wearable", "w1", "telemetry", start + m * 60, heart_rate=130)
        )
    ]
    (fire,) = out
    assert fire.at == start  # the episode's start; raised from the first reading inside
    assert eng.rules[0].active is not None
    # clears are never held back by the window
    morning = MIDNIGHT + 30 * 3600  # Thursday 06:00: outside
    (clear,) = eng.evaluate(reading("wearable", "w1", "telemetry", morning, heart_rate=90))
    assert clear.action == "clear"


def test_absence_counts_silence_only_inside_the_window(tmp_path: Path) -> None:
    # "not up by 09:00": nothing from the wearable for 2 hours within 07:00-12:00
    rule = {**BASE, "id": "not_up", "kind": "wearable", "type": "absence", "for": "2h",
            "active": {"hours": "07:00-12:00"}}  # fmt: skip
    eng = engine(tmp_path, rule, now=MIDNIGHT)
    eng.evaluate(reading("wearable", "w1", "telemetry", MIDNIGHT + 3600, heart_rate=60))
    eng.evaluate(reading("wearable", "w2", "telemetry", MIDNIGHT + 8.5 * 3600, heart_rate=60))
    assert eng.tick(MIDNIGHT + 6 * 3600) == []  # 5 h silent, but the window is not open
    assert eng.tick(MIDNIGHT + 8.99 * 3600) == []
    (fire,) = eng.tick(MIDNIGHT + 9 * 3600)  # 2 h counted from 07:00
    assert (fire.device_id, fire.at) == ("w1", MIDNIGHT + 9 * 3600)
    assert eng.tick(MIDNIGHT + 10.4 * 3600) == []  # w2 heard at 08:30
    assert acts(eng.tick(MIDNIGHT + 10.5 * 3600)) == [("fire", "w2")]
    (clear,) = eng.evaluate(
        reading("wearable", "w1", "telemetry", MIDNIGHT + 13 * 3600, heart_rate=60)
    )
    assert clear.action == "clear"  # outside the window: clears all the same


# ------------------------------------------------------------------ combinations

AT_REST: dict[str, Any] = {**BASE, "id": "at_rest", "kind": "wearable", "type": "all",
                           "conditions": [
                               {"metric": "heart_rate", "above": 110, "clear": 100, "for": "5m"},
                               {"metric": "steps", "unchanged": "10m"}]}  # fmt: skip


def test_heart_rate_high_and_no_steps_needs_both_each_for_its_own_duration(
    tmp_path: Path,
) -> None:
    eng = engine(tmp_path, AT_REST)
    t0 = MIDNIGHT + 10 * 3600

    def minute(m: int, hr: float, steps: int) -> list[Transition]:
        return eng.evaluate(
            reading("wearable", "w1", "telemetry", t0 + m * 60, heart_rate=hr, steps=steps)
        )

    out = [t for m in range(12) for t in minute(m, 125, 100 * m)]  # walking: steps go up
    assert out == []
    out = [t for m in range(12, 21) for t in minute(m, 125, 1200)]  # stopped at minute 12
    assert out == []  # heart rate high for long enough, but steps unchanged only 8 minutes
    (fire,) = minute(22, 125, 1200)  # unchanged for 10 minutes now
    assert (fire.action, fire.device_id, fire.at) == ("fire", "w1", t0 + 22 * 60)
    assert minute(23, 125, 1200) == []
    (clear,) = minute(24, 125, 1210)  # walking again
    assert clear.action == "clear"


def test_any_fires_on_either_condition(tmp_path: Path) -> None:
    rule = {**BASE, "id": "either", "kind": "wearable", "type": "any", "conditions": [
        {"metric": "spo2", "below": 90, "clear": 92},
        {"event": "sos", "within": "1m"}]}  # fmt: skip
    eng = engine(tmp_path, rule)
    t0 = MIDNIGHT
    assert acts(eng.evaluate(reading("wearable", "w1", "event", t0, event="sos"))) == [
        ("fire", "w1")
    ]
    (clear,) = eng.evaluate(reading("wearable", "w1", "telemetry", t0 + 120, spo2=97))
    assert clear.action == "clear"  # the sos is two minutes old, spo2 fine


UNIT_RULE: dict[str, Any] = {**BASE, "id": "smoke_and_fall", "kind": "wearable", "type": "all",
                             "scope": "unit", "conditions": [
                                 {"kind": "wearable", "event": "fall", "within": "5m"},
                                 {"kind": "smoke", "event": "alarm", "within": "5m"}]}  # fmt: skip


def test_a_unit_rule_combines_the_homes_devices_and_alerts_on_the_real_wearable(
    tmp_path: Path,
) -> None:
    eng = engine(tmp_path, UNIT_RULE)
    t0 = MIDNIGHT + 3600
    assert eng.evaluate(reading("smoke", "s1", "event", t0, event="alarm")) == []
    # a fall in another flat does not combine with this flat's smoke
    assert eng.evaluate(reading("wearable", "w2", "event", t0 + 30, event="fall")) == []
    (fire,) = eng.evaluate(reading("wearable", "w1", "event", t0 + 60, event="fall"))
    assert (fire.action, fire.device_id, fire.kind) == ("fire", "w1", "wearable")
    assert fire.labels["unit"] == "1-1-101"
    # a later reading of the detector judges the unit again: the fall is 6 minutes old
    (clear,) = eng.evaluate(reading("smoke", "s1", "event", t0 + 7 * 60, event="alarm_clear"))
    assert (clear.action, clear.device_id) == ("clear", "w1")


# ------------------------------------------------------------------ verification windows

FALL: dict[str, Any] = {**BASE, "id": "fall", "kind": "wearable", "type": "event",
                        "events": ["fall"], "severity": "critical",
                        "verify": {"cancel_events": ["fall_cancelled"],
                                   "within": "30s"}}  # fmt: skip
SMOKE: dict[str, Any] = {**BASE, "id": "smoke", "kind": "smoke", "type": "event",
                         "events": ["alarm"], "clear_events": ["alarm_clear"],
                         "persist": "10s"}  # fmt: skip


def test_a_fall_is_recorded_at_once_pages_after_the_window_and_a_cancel_resolves_it(
    tmp_path: Path,
) -> None:
    eng = engine(tmp_path, FALL)
    t0 = MIDNIGHT + 3600
    (fire,) = eng.evaluate(reading("wearable", "w1", "event", t0, t0 + 1, event="fall"))
    assert fire.action == "fire" and fire.page_at == t0 + 30
    (clear,) = eng.evaluate(
        reading("wearable", "w1", "event", t0 + 12, t0 + 13, event="fall_cancelled")
    )
    assert clear.action == "clear" and clear.at == t0 + 12
    assert "cancelled" in clear.reason and "nobody was paged" in clear.reason
    # a cancel after the window changes nothing: the caretaker was paged and goes
    eng.evaluate(reading("wearable", "w1", "event", t0 + 100, event="fall"))
    assert eng.evaluate(reading("wearable", "w1", "event", t0 + 140, event="fall_cancelled")) == []


def test_a_smoke_alarm_that_does_not_persist_is_a_pre_alarm(tmp_path: Path) -> None:
    eng = engine(tmp_path, SMOKE)
    t0 = MIDNIGHT
    (fire,) = eng.evaluate(reading("smoke", "s1", "event", t0, event="alarm"))
    assert fire.page_at == t0 + 10
    (clear,) = eng.evaluate(reading("smoke", "s1", "event", t0 + 4, event="alarm_clear"))
    assert "did not persist 10 s" in clear.reason and "pre-alarm" in clear.reason
    eng.evaluate(reading("smoke", "s1", "event", t0 + 60, event="alarm"))
    (clear,) = eng.evaluate(reading("smoke", "s1", "event", t0 + 200, event="alarm_clear"))
    assert clear.reason == ""  # a real alarm, cleared later


# ------------------------------------------------------------------ baselines

HR_BASE: dict[str, Any] = {**BASE, "id": "hr_base", "kind": "wearable", "type": "threshold",
                           "metric": "heart_rate", "for": "10m",
                           "baseline": {"above_by": 25, "clear_by": 10, "days": 14,
                                        "min_days": 7}}  # fmt: skip


def test_a_baseline_rule_fires_above_the_residents_own_median_at_that_hour(
    tmp_path: Path,
) -> None:
    eng = engine(tmp_path, HR_BASE)
    spec = ("heart_rate", 14, 7)
    hours: list[HourBaseline | None] = [HourBaseline(h, 60.0, 3.0, 14) for h in range(24)]
    hours[10] = HourBaseline(10, 90.0, 5.0, 14)  # her usual morning walk
    eng.set_baselines(Baselines(TZ, MIDNIGHT, {("w1", spec): hours}))
    t0 = MIDNIGHT + 10 * 3600  # 10:00 local: trigger 115
    run = [reading("wearable", "w1", "telemetry", t0 + m * 60, heart_rate=105) for m in range(12)]
    assert [t for r in run for t in eng.evaluate(r)] == []  # 105 is normal for her at ten
    t1 = MIDNIGHT + 14 * 3600  # 14:00: trigger 85
    run = [reading("wearable", "w1", "telemetry", t1 + m * 60, heart_rate=105) for m in range(11)]
    (fire,) = [t for r in run for t in eng.evaluate(r)]
    assert (fire.action, fire.at) == ("fire", t1)
    (clear,) = eng.evaluate(reading("wearable", "w1", "telemetry", t1 + 700, heart_rate=69))
    assert clear.action == "clear"
    # w2 has no baseline (too little history): the rule does not apply to it
    run = [reading("wearable", "w2", "telemetry", t1 + m * 60, heart_rate=200) for m in range(20)]
    assert [t for r in run for t in eng.evaluate(r)] == []


# ------------------------------------------------------------------ rule-file errors


def errors(tmp_path: Path, rule: dict[str, Any]) -> list[str]:
    path = write(tmp_path, rule)
    with pytest.raises(RuleFileError) as exc:
        load_rules([path])
    assert all(e.startswith(f"{path}: rule '{rule['id']}' (#1): field '") for e in exc.value.errors)
    return [e.split(": ", 2)[2] for e in exc.value.errors]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({**NIGHT_DOOR, "active": {"hours": "midnight"}},
         "field 'active.hours': expected HH:MM-HH:MM (e.g. 22:00-05:00), got 'midnight'"),
        ({**NIGHT_DOOR, "active": {"days": ["monday"]}}, "field 'active.days[0]': "),
        ({**NIGHT_DOOR, "active": {"hours": "00:00-05:00", "at": 1}},
         "field 'active.at': unknown field (allowed: days, hours)"),
        ({**AT_REST, "conditions": [{"metric": "pulse", "above": 1}, {"event": "fall",
                                                                      "within": "1m"}]},
         "field 'conditions[0].metric': unknown metric 'pulse' for wearable"),
        ({**AT_REST, "conditions": [{"metric": "steps", "unchanged": "10 minutes"}]},
         "field 'conditions[0].unchanged': invalid duration"),
        ({**AT_REST, "conditions": [{"metric": "steps", "unchanged": "1m", "above": 3}]},
         "field 'conditions[0].above': unknown field (allowed: kind, metric, unchanged)"),
        ({**AT_REST, "conditions": [{"kind": "smoke", "event": "alarm", "within": "1m"}]},
         "field 'conditions[0].kind': a device-scope rule reads its own kind only"),
        ({**UNIT_RULE, "conditions": [{"kind": "smoke", "event": "fall", "within": "1m"},
                                      {"event": "sos", "within": "1m"}]},
         "field 'conditions[0].event': unknown event 'fall' for smoke"),
        ({**FALL, "verify": {"cancel_events": ["fall_cancelled"], "within": "2m"}},
         "field 'verify.within': an alarm may wait at most 60 s before it pages"),
        ({**FALL, "verify": {"cancel_events": ["fall_cancelled"]}},
         "field 'verify.within': required"),
        ({**FALL, "verify": {"cancel_events": ["oops"], "within": "30s"}},
         "field 'verify.cancel_events[0]': unknown event 'oops' for wearable"),
        ({**SMOKE, "persist": "90s"},
         "field 'persist': an alarm may wait at most 60 s before it pages"),
        ({**SMOKE, "clear_events": []},
         "field 'persist': persist needs clear_events (what ends the condition)"),
        ({**HR_BASE, "above": 100},
         "field 'below': with a baseline, give above_by/below_by in it, not above/below"),
        ({**HR_BASE, "baseline": {"above_by": 25, "clear_by": 30}},
         "field 'baseline.clear_by': clear_by 30 must be less than the trigger's distance 25"),
        ({**HR_BASE, "baseline": {"clear_by": 3}},
         "field 'baseline.below_by': give exactly one of 'above_by' or 'below_by'"),
    ],
)  # fmt: skip
def test_errors_of_the_new_forms_name_the_field(
    tmp_path: Path, rule: dict[str, Any], expected: str
) -> None:
    found = errors(tmp_path, rule)
    assert any(e.startswith(expected) for e in found), found


def test_an_alarm_rule_states_its_window_and_a_supervisory_one_may_wait_longer(
    tmp_path: Path,
) -> None:
    rule = {**FALL, "signal": "supervisory",
            "verify": {"cancel_events": ["fall_cancelled"], "within": "5m"}}  # fmt: skip
    (loaded,) = load_rules([write(tmp_path, rule)])
    assert loaded.wait == 300  # type: ignore[union-attr]


def test_where_limits_an_absence_rule_to_building_doors(tmp_path: Path) -> None:
    rule = {**BASE, "id": "door_silent", "kind": "gate", "type": "absence", "for": "1h",
            "where": {"building": True}}  # fmt: skip
    eng = engine(tmp_path, rule)
    eng.evaluate(reading("gate", "main", "event", MIDNIGHT + 60, event="granted"))
    assert acts(eng.tick(MIDNIGHT + 2 * 3600)) == [("fire", "door")]  # never "main"

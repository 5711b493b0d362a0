"""The built-in community pack: it validates, and typical incidents raise the expected alerts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Device, Registry, Resident
from rules.check import check_files
from rules.engine import RuleEngine
from rules.model import AbsenceRule, EventRule, ThresholdRule, builtin_pack, load_rules
from rules.transitions import Transition
from tests.clock import FakeClock as Clock

T0 = 1_700_000_000.0
WHERE = {"community": "y", "compound": "c3", "building": "b12"}


def registry() -> Registry:
    return Registry(
        "y",
        devices=[
            Device(device_id="w1", kind="wearable", compound="c3", building="b12",
                   unit="3-12-501", resident_id="r1"),
            Device(device_id="s1", kind="smoke", compound="c3", building="b12", unit="3-12-501",
                   room="kitchen"),
            Device(device_id="g1", kind="gate", compound="c3", name="Compound 3 north gate"),
        ],
        residents=[Resident(resident_id="r1", building="b12", unit="3-12-501",
                            caretakers=("st7",), allowed_area=(36.06, 103.83, 400.0))],
    )  # fmt: skip


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def eng(clock: Clock) -> RuleEngine:
    return RuleEngine(load_rules([builtin_pack()]), registry(), clock=clock)


def reading(kind: str, device: str, stream: str, ts: float, **body: Any) -> Reading:
    payload = json.dumps({"ts": round(ts * 1000), **body}).encode()
    r = decode(topic_for("y", kind, device, stream), payload, ts + 2)
    assert isinstance(r, Reading), r
    return r


def summary(t: Transition) -> tuple[str, str, str, str, str, str]:
    return (t.action, t.rule_id, t.device_id, t.severity, t.signal, t.route)


def test_pack_validates() -> None:
    count, errors = check_files([builtin_pack()])
    assert errors == [] and count == len(load_rules([builtin_pack()])) >= 15
    rules = {r.id: r for r in load_rules([builtin_pack()])}
    assert all(r.enabled for r in rules.values())
    hr_high, hr_low, spo2 = (rules[f"wearable_{n}"] for n in ("heart_rate_high", "heart_rate_low",
                                                             "spo2_low"))  # fmt: skip
    assert isinstance(hr_high, ThresholdRule) and hr_high.override == "heart_rate_high"
    assert (hr_high.above, hr_high.clear, hr_high.for_) == (120, 110, 600)
    assert isinstance(hr_low, ThresholdRule) and (hr_low.below, hr_low.clear) == (45, 50)
    assert isinstance(spo2, ThresholdRule) and (spo2.below, spo2.clear, spo2.for_) == (90, 92, 300)
    assert isinstance(rules["smoke_alarm"], EventRule)
    assert rules["smoke_alarm"].clear_events == ("alarm_clear",)
    assert isinstance(rules["wearable_silent"], AbsenceRule)
    assert rules["wearable_silent"].signal == "trouble"


def test_fall(eng: RuleEngine) -> None:
    (t,) = eng.evaluate(reading("wearable", "w1", "event", T0, event="fall"))
    assert summary(t) == ("fire", "wearable_fall", "w1", "critical", "alarm", "caretaker")
    assert t.summary == "Fall detected" and t.at == T0
    assert t.labels == {**WHERE, "unit": "3-12-501", "resident_id": "r1"}


def test_smoke_alarm_fires_and_clears(eng: RuleEngine) -> None:
    (t,) = eng.evaluate(reading("smoke", "s1", "event", T0, event="alarm"))
    assert summary(t) == ("fire", "smoke_alarm", "s1", "critical", "alarm", "security")
    assert t.labels == {**WHERE, "unit": "3-12-501"}
    (t,) = eng.evaluate(reading("smoke", "s1", "event", T0 + 90, event="alarm_clear"))
    assert summary(t)[:2] == ("clear", "smoke_alarm")


def test_gate_forced_and_held_open(eng: RuleEngine) -> None:
    (t,) = eng.evaluate(reading("gate", "g1", "event", T0, event="forced"))
    assert summary(t) == ("fire", "gate_forced", "g1", "major", "alarm", "security")
    assert t.labels == {"community": "y", "compound": "c3"}
    (t,) = eng.evaluate(reading("gate", "g1", "event", T0 + 60, event="held_open"))
    assert summary(t) == ("fire", "gate_held_open", "g1", "minor", "supervisory", "security")
    (t,) = eng.evaluate(reading("gate", "g1", "event", T0 + 90, event="closed"))
    assert summary(t)[:2] == ("clear", "gate_held_open")


def test_repeated_denied(eng: RuleEngine) -> None:
    out = [t for s in range(0, 50, 10) for t in eng.evaluate(
        reading("gate", "g1", "event", T0 + s, event="denied", method="card"))]  # fmt: skip
    assert [summary(t)[:2] for t in out] == [("fire", "gate_denied_repeated")]


def test_heart_rate_high_for_ten_minutes(eng: RuleEngine) -> None:
    normal = dict(spo2=97, battery=80, worn=True, lat=36.06, lon=103.83)
    out = [t for m in range(11) for t in eng.evaluate(
        reading("wearable", "w1", "telemetry", T0 + m * 60, heart_rate=128, **normal))]  # fmt: skip
    assert [summary(t) for t in out] == [
        ("fire", "wearable_heart_rate_high", "w1", "major", "alarm", "caretaker")
    ]
    assert out[0].at == T0 and out[0].value == 128


def test_normal_day_raises_nothing(eng: RuleEngine, clock: Clock) -> None:
    out: list[Transition] = []
    for m in range(0, 600, 5):
        clock.t = T0 + m * 60
        out += eng.evaluate(
            reading(
                "wearable",
                "w1",
                "telemetry",
                clock.t,
                heart_rate=72 + m % 9,
                spo2=96,
                battery=90 - m / 10,
                lat=36.061,
                lon=103.831,
            )
        )
        out += eng.evaluate(
            reading(
                "smoke",
                "s1",
                "telemetry",
                clock.t,
                obscuration_pct_m=0.1,
                temperature_c=22,
                co_ppm=2,
                battery=88,
            )
        )
        out += eng.evaluate(reading("gate", "g1", "event", clock.t, event="granted", method="card"))
        out += eng.tick()
    assert out == []


def test_silent_devices(eng: RuleEngine, clock: Clock) -> None:
    eng.evaluate(reading("smoke", "s1", "telemetry", T0, battery=90))
    clock.t = T0 + 1800
    assert [summary(t)[:3] for t in eng.tick()] == [("fire", "wearable_silent", "w1")]
    clock.t = T0 + 7200  # heard when received, 2 s after its ts
    assert eng.tick() == []
    clock.t = T0 + 7202
    assert [summary(t)[:3] for t in eng.tick()] == [("fire", "smoke_silent", "s1")]
    (t,) = eng.evaluate(reading("wearable", "w1", "event", clock.t, event="worn"))
    assert summary(t)[:3] == ("clear", "wearable_silent", "w1")

"""The rule engine with a fake clock: every rule type fires and clears, in event time."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Device, Registry, Resident
from rules.engine import RuleEngine
from rules.model import load_rules
from rules.transitions import Transition
from tests.clock import FakeClock as Clock

T0 = 1_700_000_000.0
BASE: dict[str, Any] = {"severity": "major", "signal": "alarm", "route": "caretaker",
                        "summary": "Test"}  # fmt: skip
HR_HIGH: dict[str, Any] = {**BASE, "id": "hr_high", "kind": "wearable", "type": "threshold",
                           "metric": "heart_rate", "above": 120, "clear": 110, "for": "10m",
                           "override": "heart_rate_high"}  # fmt: skip
SPO2_LOW: dict[str, Any] = {**BASE, "id": "spo2_low", "kind": "wearable", "type": "threshold",
                            "metric": "spo2", "below": 90, "clear": 92, "for": "5m"}  # fmt: skip
FALL: dict[str, Any] = {**BASE, "id": "fall", "kind": "wearable", "type": "event",
                        "events": ["fall"]}  # fmt: skip
SMOKE: dict[str, Any] = {**BASE, "id": "smoke", "kind": "smoke", "type": "event",
                         "events": ["alarm"], "clear_events": ["alarm_clear"]}  # fmt: skip
SILENT: dict[str, Any] = {**BASE, "id": "silent", "kind": "wearable", "type": "absence",
                          "for": "30m"}  # fmt: skip
DENIED: dict[str, Any] = {**BASE, "id": "denied", "kind": "gate", "type": "count",
                          "event": "denied", "threshold": 3, "window": "2m"}  # fmt: skip
ZONE: dict[str, Any] = {**BASE, "id": "zone", "kind": "wearable", "type": "zone", "for": 0,
                        "margin_m": 50}  # fmt: skip


def registry() -> Registry:
    return Registry(
        "y",
        devices=[
            Device(device_id="w1", kind="wearable", compound="c3", building="b12",
                   unit="3-12-501", resident_id="r1"),
            Device(device_id="w2", kind="wearable", compound="c3", building="b12",
                   unit="3-12-502", resident_id="r2"),
        ],
        residents=[
            Resident(resident_id="r1", building="b12", unit="3-12-501",
                     thresholds={"heart_rate_high": 100}, allowed_area=(36.06, 103.83, 500.0)),
            Resident(resident_id="r2", building="b12", unit="3-12-502"),
        ],
    )  # fmt: skip


def engine(
    tmp_path: Path, *rules: dict[str, Any], reg: Registry | None = None, clock: Clock | None = None
) -> RuleEngine:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": list(rules)}), encoding="utf-8")
    return RuleEngine(load_rules([path]), reg or Registry("y"), clock=clock or Clock())


def reading(
    device: str, stream: str, ts: float, received: float | None = None, kind: str = "wearable",
    **body: Any,
) -> Reading:  # fmt: skip
    payload = json.dumps({"ts": round(ts * 1000), **body}).encode()
    r = decode(topic_for("y", kind, device, stream), payload, ts if received is None else received)
    assert isinstance(r, Reading), r
    return r


def hr(device: str, minute: float, value: float, received: float | None = None) -> Reading:
    return reading(device, "telemetry", T0 + minute * 60, received, heart_rate=value)


def feed(eng: RuleEngine, *readings: Reading) -> list[Transition]:
    return [t for r in readings for t in eng.evaluate(r)]


def test_threshold_fires_after_for_in_event_time(tmp_path: Path) -> None:
    eng = engine(tmp_path, HR_HIGH)
    assert feed(eng, *(hr("u1", m, 130) for m in range(10))) == []
    (fire,) = eng.evaluate(hr("u1", 10, 131))
    assert (fire.action, fire.rule_id, fire.device_id, fire.kind) == (
        "fire",
        "hr_high",
        "u1",
        "wearable",
    )
    assert fire.at == T0 and fire.value == 131 and not fire.late
    assert (fire.severity, fire.signal, fire.route, fire.summary) == (
        "major",
        "alarm",
        "caretaker",
        "Test",
    )
    assert fire.labels == {"community": "y", "registered": "false"}
    assert fire.fingerprint == "hr_high:u1"
    assert feed(eng, *(hr("u1", m, 140) for m in range(11, 20))) == []  # once per episode


def test_for_zero_fires_at_once(tmp_path: Path) -> None:
    eng = engine(tmp_path, {**HR_HIGH, "for": 0})
    assert [t.action for t in eng.evaluate(hr("u1", 0, 121))] == ["fire"]


def test_hysteresis(tmp_path: Path) -> None:
    eng = engine(tmp_path, HR_HIGH)
    assert [t.action for t in feed(eng, *(hr("u1", m, 130) for m in range(11)))] == ["fire"]
    assert feed(eng, hr("u1", 11, 115), hr("u1", 12, 110), hr("u1", 13, 125)) == []
    (clear,) = eng.evaluate(hr("u1", 14, 109))
    assert (clear.action, clear.at, clear.value) == ("clear", T0 + 14 * 60, 109)
    assert feed(eng, hr("u1", 15, 100)) == []  # no clear without a fire
    # a new episode needs the full duration again
    assert feed(eng, *(hr("u1", m, 130) for m in range(16, 26))) == []
    assert [t.action for t in eng.evaluate(hr("u1", 26, 130))] == ["fire"]


def test_dip_below_trigger_restarts_pending_episode(tmp_path: Path) -> None:
    eng = engine(tmp_path, HR_HIGH)
    assert feed(eng, *(hr("u1", m, 130) for m in range(9)), hr("u1", 9, 118)) == []
    assert feed(eng, *(hr("u1", m, 130) for m in range(10, 20))) == []
    (fire,) = eng.evaluate(hr("u1", 20, 130))
    assert fire.at == T0 + 10 * 60


def test_gap_longer_than_for_restarts_episode(tmp_path: Path) -> None:
    eng = engine(tmp_path, HR_HIGH)
    assert feed(eng, hr("u1", 0, 130), hr("u1", 11, 130)) == []  # nothing seen for 11 minutes
    assert feed(eng, hr("u1", 20, 130)) == []
    (fire,) = eng.evaluate(hr("u1", 21, 130))
    assert fire.at == T0 + 11 * 60


def test_below_threshold(tmp_path: Path) -> None:
    eng = engine(tmp_path, SPO2_LOW)
    spo2 = [reading("u1", "telemetry", T0 + m * 60, spo2=v) for m, v in enumerate([88, 87, 89, 88,
            89, 86, 91, 92, 93])]  # fmt: skip
    out = feed(eng, *spo2)
    assert [(t.action, t.at) for t in out] == [("fire", T0), ("clear", T0 + 8 * 60)]


def test_late_burst_fires_once_marked_late(tmp_path: Path) -> None:
    eng = engine(tmp_path, HR_HIGH)
    now = T0 + 3600
    burst = [hr("u1", m, 135, received=now) for m in range(15)]  # an hour old, all at once
    (fire,) = feed(eng, *burst)
    assert fire.action == "fire" and fire.late and fire.at == T0
    (clear,) = feed(eng, hr("u1", 15, 90, received=now), hr("u1", 16, 90, received=now))
    assert clear.late and clear.at == T0 + 15 * 60
    (fire,) = feed(eng, *(hr("u1", 60 + m, 135, received=now + m * 60 + 5) for m in range(11)))
    assert not fire.late  # live readings, a few seconds of lag


def test_out_of_order_reading_ignored_for_threshold(tmp_path: Path) -> None:
    eng = engine(tmp_path, HR_HIGH)
    assert feed(eng, hr("u1", 0, 130), hr("u1", 5, 130)) == []
    assert feed(eng, hr("u1", 3, 80, received=T0 + 5 * 60 + 1)) == []  # older: no reset
    assert eng.out_of_order == 1
    (fire,) = eng.evaluate(hr("u1", 10, 130))
    assert fire.at == T0


def test_per_resident_override_shifts_trigger_and_clear(tmp_path: Path) -> None:
    eng = engine(tmp_path, HR_HIGH, reg=registry())
    # r1 has heart_rate_high 100: trigger 100, clear 110 - 20 = 90; r2 keeps 120/110
    out = feed(eng, *(hr(w, m, 105) for m in range(11) for w in ("w1", "w2")))
    assert [(t.action, t.device_id) for t in out] == [("fire", "w1")]
    assert out[0].labels == {"community": "y", "compound": "c3", "building": "b12",
                             "unit": "3-12-501", "resident_id": "r1"}  # fmt: skip
    assert feed(eng, hr("w1", 11, 95)) == []
    assert [t.action for t in eng.evaluate(hr("w1", 12, 89))] == ["clear"]


def test_event_rule_without_clear_fires_every_time(tmp_path: Path) -> None:
    eng = engine(tmp_path, FALL)
    fall = [reading("u1", "event", T0 + s, event="fall") for s in (0, 600)]
    out = feed(eng, *fall)
    assert [(t.action, t.at, t.late) for t in out] == [
        ("fire", T0, False),
        ("fire", T0 + 600, False),
    ]
    assert feed(eng, reading("u1", "event", T0 + 700, event="sos")) == []
    assert eng.state_size() == 0


def test_event_out_of_order_and_late_still_fires(tmp_path: Path) -> None:
    eng = engine(tmp_path, FALL)
    eng.evaluate(reading("u1", "event", T0 + 600, event="fall"))
    (fire,) = eng.evaluate(reading("u1", "event", T0, received=T0 + 601, event="fall"))
    assert fire.at == T0 and fire.late
    (fire,) = eng.evaluate(reading("u1", "event", T0 + 640, received=T0 + 700, event="fall"))
    assert not fire.late  # 60 s of lag is not late


def test_event_rule_with_clear(tmp_path: Path) -> None:
    eng = engine(tmp_path, SMOKE)

    def ev(s: float, name: str, received: float | None = None) -> Reading:
        return reading("s1", "event", T0 + s, received, kind="smoke", event=name)

    assert feed(eng, ev(0, "alarm_clear")) == []  # nothing to clear
    assert [t.action for t in feed(eng, ev(10, "alarm"), ev(20, "alarm"))] == ["fire"]
    assert feed(eng, ev(5, "alarm_clear", received=T0 + 30)) == []  # older than the alarm
    (clear,) = eng.evaluate(ev(40, "alarm_clear"))
    assert (clear.action, clear.at, clear.kind) == ("clear", T0 + 40, "smoke")
    # an alarm from before that clear arrives late: reported, and closed at once
    out = eng.evaluate(ev(35, "alarm", received=T0 + 200))
    assert [(t.action, t.at, t.late) for t in out] == [("fire", T0 + 35, True),
                                                      ("clear", T0 + 40, True)]  # fmt: skip
    assert [t.action for t in feed(eng, ev(50, "alarm"), ev(60, "alarm_clear"))] == [
        "fire",
        "clear",
    ]


def test_absence_fires_on_tick_and_clears_when_heard(tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(tmp_path, SILENT, clock=clock)
    assert eng.tick() == []  # never heard and not registered: nothing expected
    eng.evaluate(hr("u1", 0, 70))
    clock.t = T0 + 1799
    assert eng.tick() == []
    clock.t = T0 + 1800
    (fire,) = eng.tick()
    assert (fire.action, fire.rule_id, fire.device_id, fire.at) == (
        "fire",
        "silent",
        "u1",
        T0 + 1800,
    )
    assert fire.labels == {"community": "y", "registered": "false"}
    clock.t = T0 + 4000
    assert eng.tick() == []
    # the broker's last will says offline: not a sign of life, clears nothing
    assert eng.evaluate(reading("u1", "status", T0 + 4000, state="offline")) == []
    assert eng.tick(T0 + 5000) == []
    clock.t = T0 + 6000
    (clear,) = eng.evaluate(hr("u1", 1, 72, received=T0 + 6000))  # buffered reading: heard now
    assert (clear.action, clear.at, clear.late) == ("clear", T0 + 6000, False)
    assert eng.tick(T0 + 6000 + 1799) == []
    assert [t.action for t in eng.tick(T0 + 6000 + 1800)] == ["fire"]


def test_offline_does_not_reset_absence_timer(tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(tmp_path, SILENT, clock=clock)
    eng.evaluate(hr("u1", 0, 70))
    clock.t = T0 + 1000
    eng.evaluate(reading("u1", "status", clock.t, state="offline"))
    assert [t.at for t in eng.tick(T0 + 1800)] == [T0 + 1800]
    clock.t = T0 + 2000
    assert [t.action for t in eng.evaluate(reading("u1", "status", clock.t, state="online"))] == [
        "clear"
    ]


def test_registered_device_never_heard_fires_after_for_from_start(tmp_path: Path) -> None:
    eng = engine(tmp_path, SILENT, reg=registry(), clock=Clock())
    assert eng.tick(T0 + 1799) == []
    out = eng.tick(T0 + 1800)
    assert sorted(t.device_id for t in out) == ["w1", "w2"]
    assert out[0].labels["compound"] == "c3" and out[0].at == T0 + 1800


def test_absence_streams_filter(tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(tmp_path, {**SILENT, "streams": ["telemetry"]}, clock=clock)
    eng.evaluate(hr("u1", 0, 70))
    clock.t = T0 + 1700
    eng.evaluate(reading("u1", "event", clock.t, event="worn"))  # not on a watched stream
    assert [t.device_id for t in eng.tick(T0 + 1800)] == ["u1"]


def test_count_window(tmp_path: Path) -> None:
    clock = Clock()
    eng = engine(tmp_path, DENIED, clock=clock)

    def denied(gate: str, s: float) -> Reading:
        return reading(gate, "event", T0 + s, kind="gate", event="denied", method="card")

    assert feed(eng, denied("g1", 0), denied("g1", 50), denied("g2", 60)) == []
    (fire,) = eng.evaluate(denied("g1", 100))
    assert (fire.action, fire.device_id, fire.at, fire.value) == ("fire", "g1", T0 + 100, 3)
    assert feed(eng, denied("g1", 110)) == []  # still the same episode
    assert eng.tick(T0 + 150) == []  # 50, 100, 110 still within 2 min
    (clear,) = eng.tick(T0 + 171)
    assert (clear.action, clear.at) == ("clear", T0 + 170)  # 50 left the window at 170
    # spread wider than the window: no fire
    assert feed(eng, denied("g2", 200), denied("g2", 330)) == []
    eng.tick(T0 + 1000)
    assert eng.state_size() == 0  # expired windows are dropped


def test_count_window_is_inclusive(tmp_path: Path) -> None:
    eng = engine(tmp_path, DENIED)
    out = feed(
        eng, *(reading("g1", "event", T0 + s, kind="gate", event="denied") for s in (0, 60, 120))
    )
    assert [(t.action, t.at) for t in out] == [("fire", T0 + 120)]  # 3 within exactly 2 minutes
    (clear,) = eng.tick(T0 + 120.5)
    assert clear.at == T0 + 120


def test_count_burst_episodes_in_event_time(tmp_path: Path) -> None:
    eng = engine(tmp_path, DENIED, clock=Clock(T0 + 3600))
    burst = [reading("g1", "event", T0 + s, T0 + 3600, kind="gate", event="denied")
             for s in (0, 10, 20, 30, 500, 510, 520)]  # fmt: skip
    out = feed(eng, *burst)
    assert [(t.action, t.at, t.late) for t in out] == [
        ("fire", T0 + 20, True), ("clear", T0 + 130, True), ("fire", T0 + 520, True)
    ]  # fmt: skip


def test_zone(tmp_path: Path) -> None:
    eng = engine(tmp_path, ZONE, reg=registry())
    metre = 1 / 111_195  # degrees of latitude per metre

    def at(m: float, north_m: float, device: str = "w1") -> Reading:
        return reading(device, "telemetry", T0 + m * 60, lat=36.06 + north_m * metre, lon=103.83)

    assert feed(eng, at(0, 100), at(1, 490), at(0, 2000, "w2"), at(1, 2000, "u9")) == []
    (fire,) = eng.evaluate(at(2, 520))
    assert fire.action == "fire" and fire.value is not None and 515 < fire.value < 525
    assert feed(eng, at(3, 480)) == []  # inside, but not by the margin
    assert [t.action for t in eng.evaluate(at(4, 440))] == ["clear"]


@pytest.mark.expect_errors(
    "jiayuan_rule_errors_total", 'jiayuan_log_errors_total{logger="rules.engine"}'
)
def test_failing_rule_does_not_stop_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Registry):
        def threshold(self, device_id: str, name: str, default: float) -> float:
            if name == "boom":
                raise RuntimeError(f"lookup failed for value {default}")
            return default

    bad = {**HR_HIGH, "id": "bad", "override": "boom", "for": 0}
    eng = engine(tmp_path, bad, {**HR_HIGH, "for": 0}, FALL, reg=Broken("y"))
    with caplog.at_level(logging.DEBUG, logger="rules"):
        out = feed(eng, hr("u1", 0, 137), hr("u1", 1, 138))
        out += eng.evaluate(reading("u1", "event", T0 + 120, event="fall"))
    assert [(t.rule_id, t.action) for t in out] == [("hr_high", "fire"), ("fall", "fire")]
    assert eng.errors == {"bad": 2}
    errors = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert errors and all(r.levelno == logging.ERROR for r in errors)
    assert all("bad" in r.getMessage() and "137" not in r.getMessage() for r in errors)


def test_no_health_values_logged_at_info(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    eng = engine(tmp_path, {**HR_HIGH, "for": 0}, SPO2_LOW, ZONE, reg=registry())
    with caplog.at_level(logging.DEBUG):
        feed(eng, hr("w1", 0, 187), reading("w1", "telemetry", T0 + 60, spo2=71, lat=36.5, lon=104))
    text = " ".join(r.getMessage() for r in caplog.records)
    assert all(v not in text for v in ("187", "71", "36.5", "104"))


def test_forget_restore_and_disabled(tmp_path: Path) -> None:
    clock = Clock()
    off = {**FALL, "id": "off", "events": ["sos"], "enabled": False}
    eng = engine(tmp_path, HR_HIGH, SMOKE, SILENT, DENIED, off, clock=clock)
    assert [r.id for r in eng.rules] == ["hr_high", "smoke", "silent", "denied"]
    assert feed(eng, reading("u1", "event", T0, event="sos")) == []
    feed(eng, hr("u1", 0, 130), reading("s1", "event", T0, kind="smoke", event="alarm"))
    assert eng.state_size() == 3  # silent and hr_high for u1, smoke for s1
    eng.forget("u1")
    eng.forget("s1")
    assert eng.state_size() == 0
    # after a restart, open alerts are handed back so the rules can clear them
    assert eng.restore("hr_high", "u2", T0)
    assert eng.restore("smoke", "s2", T0)
    assert not eng.restore("nope", "u2", T0)
    assert [t.action for t in eng.evaluate(hr("u2", 5, 80))] == ["clear"]
    clear = eng.evaluate(reading("s2", "event", T0 + 10, kind="smoke", event="alarm_clear"))
    assert [t.action for t in clear] == ["clear"]
    assert eng.restore("silent", "u3", T0)
    assert [t.action for t in eng.evaluate(hr("u3", 6, 80))] == ["clear"]
    assert eng.restore("denied", "g1", T0)
    assert [t.action for t in eng.tick()] == ["clear"]


def test_set_registry_updates_labels_and_overrides(tmp_path: Path) -> None:
    eng = engine(tmp_path, {**HR_HIGH, "for": 0})
    assert eng.evaluate(hr("w1", 0, 105)) == []
    eng.set_registry(registry())
    (fire,) = eng.evaluate(hr("w1", 1, 105))
    assert fire.labels["resident_id"] == "r1"


def test_a_device_registered_after_it_reported_keeps_its_rule_state(tmp_path: Path) -> None:
    """Commissioning: a detector reports before it is registered. Once registered, its silence
    alert must clear when it is heard again, not be forgotten with the unregistered ones."""
    clock = Clock(T0)
    silent = {**BASE, "id": "smoke_silent", "kind": "smoke", "type": "absence", "for": "24h"}
    eng = engine(tmp_path, silent, clock=clock)
    detector = Device(device_id="sd-9", kind="smoke", compound="c3", building="b12", unit="1-1")
    assert eng.evaluate(reading("sd-9", "telemetry", T0, kind="smoke", battery=90)) == []
    eng.set_registry(Registry("y", devices=[detector]))
    later = T0 + 86_401
    clock.t = later
    assert [(t.action, t.rule_id) for t in eng.tick(later)] == [("fire", "smoke_silent")]
    heard = eng.evaluate(reading("sd-9", "telemetry", later + 3600, kind="smoke", battery=90))
    assert [(t.action, t.rule_id, t.device_id) for t in heard] == [
        ("clear", "smoke_silent", "sd-9")
    ]


def test_a_retired_device_is_forgotten_once_idle(tmp_path: Path) -> None:
    clock = Clock(T0)
    eng = engine(tmp_path, HR_HIGH, reg=registry(), clock=clock)
    assert feed(eng, *(hr("w2", m, 130) for m in range(5))) == []
    assert eng.state_size() == 1
    eng.set_registry(Registry("y", devices=[registry().devices["w1"]]))
    clock.t = T0 + 2 * 86_400
    eng.tick(clock.t)
    assert eng.state_size() == 0

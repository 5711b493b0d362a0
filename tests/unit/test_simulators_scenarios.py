"""Scenario timelines: what each one sends, checked through the service's own decoder."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pytest

from ingest.payloads import DECODE_REASONS, DeadLetter, Reading, decode
from simulators.fleet import Fleet, build_fleet
from simulators.scenarios import SCENARIOS, Scenario, build_scenario, merge

T0 = 1_790_000_000.0


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return build_fleet(seed=3)


def readings(sc: Scenario, t0: float = T0) -> list[Reading]:
    out = []
    for step in sc.steps:
        assert step.qos == 1
        r = decode(step.topic, step.payload, t0 + step.offset + 0.1)
        assert isinstance(r, Reading), (step, r)
        assert r.ts_flag is None
        out.append(r)
    return out


def events(rs: list[Reading]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for r in rs:
        if r.stream == "event" and r.event is not None:
            out[r.device_id].append(r.event)
    return out


def build(fleet: Fleet, name: str, **kw: object) -> Scenario:
    return build_scenario(name, fleet, T0, random.Random(name), **kw)  # type: ignore[arg-type]


def test_fire_in_one_unit_then_its_neighbour_on_the_floor(fleet: Fleet) -> None:
    sc = build(fleet, "fire")
    rs = readings(sc)
    first, second = sc.devices
    assert events(rs) == {first: ["alarm", "alarm_clear"], second: ["alarm", "alarm_clear"]}
    a, b = (fleet.registry.devices[d] for d in sc.devices)
    assert (a.building, a.floor) == (b.building, b.floor) and a.unit != b.unit
    assert a.unit is not None and b.unit is not None
    assert a.unit.rsplit("-", 1)[0] == b.unit.rsplit("-", 1)[0]  # same entrance
    alarm_at = {r.device_id: r.ts for r in rs if r.event == "alarm"}
    assert alarm_at[first] < alarm_at[second]
    ob = [r.values["obscuration_pct_m"] for r in rs if r.device_id == first and r.values]
    assert ob[0] < 0.5 and max(ob) > 3.0 and ob[-1] < 1.0
    before_alarm = [r for r in rs if r.device_id == first and r.values and r.ts <= alarm_at[first]]
    assert before_alarm[-1].values["obscuration_pct_m"] >= 3.0
    assert 300 < sc.duration < 600


def test_fall_then_a_high_heart_rate_for_more_than_ten_minutes(fleet: Fleet) -> None:
    sc = build(fleet, "fall")
    rs = readings(sc)
    assert rs[0].event == "fall" and len(sc.devices) == 1
    high = [r.ts for r in rs if r.values.get("heart_rate", 0) >= 125]
    assert high[-1] - high[0] >= 600
    assert len(high) == len([r for r in rs if r.values]) - sum(
        1 for r in rs if r.values and r.values["heart_rate"] < 125
    )


def test_sos_gate_forced_and_denied_burst(fleet: Fleet) -> None:
    sos = build(fleet, "sos")
    assert list(events(readings(sos)).values()) == [["sos", "sos"]]
    forced = build(fleet, "gate_forced_night")
    (gate,) = forced.devices
    assert fleet.registry.devices[gate].building is not None
    assert events(readings(forced)) == {gate: ["forced", "held_open", "closed"]}
    burst = build(fleet, "denied_burst")
    rs = readings(burst)
    assert events(rs) == {burst.devices[0]: ["denied"] * 8}
    assert rs[-1].ts - rs[0].ts < 60
    assert all(r.attrs["direction"] == "in" for r in rs)


def test_wearable_silent_and_late_burst(fleet: Fleet) -> None:
    silent = build(fleet, "wearable_silent")
    assert len(silent.steps) == 1 and silent.quiet_for >= 1800
    late = build(fleet, "late_burst")
    assert late.lead_in == 1800 and SCENARIOS["late_burst"].lead_in == 1800
    rs = readings(late)
    assert rs[0].stream == "status" and late.steps[0].retain
    tel = rs[1:]
    assert len(tel) == 30
    assert [r.ts for r in tel] == [T0 - 1800 + 60 * i for i in range(30)]
    assert all(r.lag > 60 for r in tel)  # uploaded late, in a burst
    seqs = [r.seq for r in rs if r.seq is not None]
    assert len(seqs) == len(rs) and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    high = [r.ts for r in tel if r.values["heart_rate"] >= 125]
    assert high[-1] - high[0] >= 600
    assert late.duration < 5


def test_wandering_leaves_the_allowed_area(fleet: Fleet) -> None:
    sc = build(fleet, "wandering")
    rs = readings(sc)
    resident = fleet.registry.resident_of(sc.devices[0])
    assert resident is not None and resident.allowed_area is not None
    lat0, lon0, radius = resident.allowed_area

    def distance(r: Reading) -> float:
        north = (r.values["lat"] - lat0) * 111_320
        east = (r.values["lon"] - lon0) * 111_320 * math.cos(math.radians(lat0))
        return math.hypot(north, east)

    outside = [r.ts for r in rs if r.values and distance(r) > radius + 25]
    assert distance(rs[0]) < radius and outside and outside[-1] - outside[0] >= 180


def test_bad_input_gives_every_dead_letter_reason(fleet: Fleet) -> None:
    sc = build(fleet, "bad_input")
    assert set(sc.expect) == set(range(len(sc.steps)))
    for i, step in enumerate(sc.steps):
        r = decode(step.topic, step.payload, T0)
        assert isinstance(r, DeadLetter), (step, r)
        assert r.reason == sc.expect[i], (step.topic, step.payload[:60], r.detail)
    # unknown_community only where several communities are declared (tests of its own)
    assert set(sc.expect.values()) == set(DECODE_REASONS) - {"unknown_community"}
    assert sc.devices == ()


def test_scenarios_continue_each_devices_seq(fleet: Fleet) -> None:
    w = fleet.wearables[5]
    before = w.seq
    sc = build(fleet, "sos", target=w.device_id)
    seqs = [r.seq for r in readings(sc)]
    assert seqs == list(range(before + 1, before + 1 + len(seqs)))
    assert w.seq == before + len(seqs)


def test_busy_devices_are_not_chosen(fleet: Fleet) -> None:
    free = fleet.wearables[-1].device_id
    busy = {w.device_id for w in fleet.wearables} - {free}
    assert build(fleet, "fall", busy=busy).devices == (free,)
    with pytest.raises(LookupError):
        build(fleet, "fall", busy=busy | {free})


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_announced_scenarios_start_with_a_retained_status(fleet: Fleet, name: str) -> None:
    sc = build(fleet, name, announce=True)
    first_by_device: dict[str, str | None] = {}
    for step, r in zip(sc.steps, readings(sc) if name != "bad_input" else [], strict=False):
        first_by_device.setdefault(r.device_id, r.stream if step.retain else None)
    assert all(v == "status" for v in first_by_device.values())
    assert set(first_by_device) == set(sc.devices)
    assert SCENARIOS[name].help.endswith(".")


def test_merge_keeps_time_order(fleet: Fleet) -> None:
    a, b = build(fleet, "sos"), build(fleet, "denied_burst")
    steps = merge([a, b])
    assert len(steps) == len(a.steps) + len(b.steps)
    assert [s.offset for s in steps] == sorted(s.offset for s in steps)


def test_fire_in_a_small_subset_still_has_a_neighbour() -> None:
    small = build_fleet(devices=60)
    sc = build_scenario("fire", small, T0)
    first, second = sc.devices
    assert first != second
    assert events(readings(sc)) == {d: ["alarm", "alarm_clear"] for d in sc.devices}

"""The simulated fleet of Y community: sizes, ids, registry, and payloads the service accepts."""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from ingest.payloads import DeadLetter, Reading, decode
from registry import load_registry
from simulators.behaviour import TZ, GateSim, SmokeSim, WearableSim
from simulators.fleet import Fleet, build_fleet

NOW = datetime(2026, 1, 14, 0, 0, tzinfo=TZ).timestamp()  # a winter night in Lanzhou


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return build_fleet(seed=7)


def reading(topic: str, payload: bytes, received: float) -> Reading:
    r = decode(topic, payload, received)
    assert isinstance(r, Reading), (topic, payload, r)
    assert r.ts_flag is None, (topic, payload)
    return r


def test_y_community_has_exactly_its_devices(fleet: Fleet) -> None:
    reg = fleet.registry
    kinds = Counter(d.kind for d in reg.devices.values())
    assert kinds == {"smoke": 3109, "wearable": 1221, "gate": 53}
    assert len(reg.buildings) == 43
    assert len({b.compound for b in reg.buildings.values()}) == 10
    assert len(reg.residents) == 1221
    assert len({d.unit for d in reg.devices.values() if d.kind == "smoke"}) == 3109
    assert (len(fleet.smoke), len(fleet.wearables), len(fleet.gates)) == (3109, 1221, 53)


def test_id_schemes(fleet: Fleet) -> None:
    reg = fleet.registry
    patterns = {
        "smoke": r"smk-C\d\d-B\d\d-\d-\d{4}",
        "wearable": r"wr-\d{5}",
        "gate": r"gate-C\d\d-(main|B\d\d)",
    }
    for d in reg.devices.values():
        assert re.fullmatch(patterns[d.kind], d.device_id), d.device_id
        if d.kind == "smoke":
            assert d.unit is not None and d.building is not None
            number, entrance, room = d.unit.split("-")
            assert d.building == f"B{int(number):02d}" and d.floor == int(room[:-2])
            assert d.device_id.endswith(f"-{entrance}-{d.floor:02d}{room[-2:]}")
    mains = [d for d in reg.devices.values() if d.device_id.endswith("-main")]
    assert len(mains) == 10 and all(d.building is None for d in mains)
    assert all(re.fullmatch(r"r-\d{5}", r) for r in reg.residents)
    for w in fleet.wearables:
        assert reg.devices[w.device_id].resident_id == w.resident_id == "r-" + w.device_id[3:]


def test_staff_roster_and_caretaker_load(fleet: Fleet) -> None:
    reg = fleet.registry
    roles = Counter(s.role for s in reg.staff.values())
    assert roles["security"] >= 40 and roles["manager"] >= 1
    assert roles["operator"] == 1 and roles["admin"] == 1
    assert len(reg.staff) <= 236
    primary = Counter(r.caretakers[0] for r in reg.residents.values())
    assert all(10 <= n <= 15 for n in primary.values()), primary
    for r in reg.residents.values():
        assert all(reg.staff[c].role == "caretaker" for c in r.caretakers)
        assert (
            reg.staff[r.caretakers[0]].buildings
            and r.building in reg.staff[r.caretakers[0]].buildings
        )
    for s in reg.staff.values():
        assert s.shifts and s.channels == (f"json://127.0.0.1:8025/notify/{s.staff_id}",)
    guards = [s for s in reg.staff.values() if s.role == "security" and s.compounds]
    assert {c for g in guards for c in g.compounds} == {f"C{i:02d}" for i in range(1, 11)}


def test_the_written_registry_loads_back_and_passes_the_cross_checks(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.write(tmp_path)
    back = load_registry(tmp_path, community="y")
    for name in ("buildings", "devices", "residents", "staff"):
        assert getattr(back, name) == getattr(fleet.registry, name)


def test_the_layout_is_fixed_and_the_behaviour_follows_the_seed() -> None:
    a, b, c = (
        build_fleet(seed=1, devices=200),
        build_fleet(seed=1, devices=200),
        build_fleet(seed=2, devices=200),
    )
    assert a.registry.devices == b.registry.devices == c.registry.devices
    assert a.registry.staff == c.registry.staff

    def play(f: Fleet) -> list[bytes]:
        return [p for s in f.sims.values() for _, p in s.telemetry(NOW, NOW)]

    assert play(a) == play(b) != play(c)


@pytest.mark.parametrize("n", [3, 50, 1000, 4383, 6000])
def test_device_count_is_exact_and_a_subset_keeps_the_community_ids(n: int, fleet: Fleet) -> None:
    f = build_fleet(devices=n)
    assert len(f.registry.devices) == len(f.sims) == n
    assert {d.kind for d in f.registry.devices.values()} == {"smoke", "wearable", "gate"}
    if n <= 4383:
        assert all(fleet.registry.devices[i] == d for i, d in f.registry.devices.items())
    worn = {d.resident_id for d in f.registry.devices.values() if d.resident_id}
    assert worn == set(f.registry.residents)


def test_every_device_kind_sends_payloads_the_service_accepts(fleet: Fleet) -> None:
    sims = fleet.sims.values()
    seen: Counter[tuple[str, str, str | None]] = Counter()
    for hour in (3, 8, 13, 18, 23):
        sim_t = NOW + hour * 3600
        for s in sims:
            for topic, payload in [s.status(sim_t), *s.telemetry(sim_t, sim_t)]:
                r = reading(topic, payload, sim_t + 0.5)
                seen[(r.kind, r.stream, r.event)] += 1
            if isinstance(s, GateSim):
                r = reading(*s.passage(sim_t, sim_t), sim_t + 0.2)
                assert r.event in ("granted", "denied")
                assert r.attrs["method"] in ("face", "card", "qr", "pin")
                assert r.attrs["direction"] in ("in", "out") and r.attrs["credential"]
                seen[(r.kind, r.stream, r.event)] += 1
    assert seen[("wearable", "telemetry", None)] == 5 * 1221
    assert seen[("smoke", "telemetry", None)] == 5 * 3109
    assert seen[("gate", "telemetry", None)] == 5 * 53
    assert seen[("smoke", "event", "low_battery")] >= 1  # a few detectors need a battery
    ts_kinds = {type(json.loads(s.status(NOW)[1])["ts"]) for s in sims}
    assert ts_kinds == {str, int}  # RFC 3339 and epoch milliseconds, as mixed fleets send


def day_of(sim: WearableSim, start: float, step: float = 60.0) -> list[dict[str, float]]:
    out = []
    for i in range(int(86400 / step)):
        t = start + i * step
        *_, (topic, payload) = sim.telemetry(t, t)
        out.append(reading(topic, payload, t + 1).values)
    return out


def test_wearable_signals_follow_the_day(fleet: Fleet) -> None:
    night_hr, day_hr, steps_day, steps_night = [], [], 0.0, 0.0
    for w in fleet.wearables[:30]:
        readings = day_of(w, NOW)
        by_hour = [readings[h * 60 : (h + 1) * 60] for h in range(24)]
        night_hr.append(
            statistics.mean(float(r["heart_rate"]) for h in (2, 3, 4) for r in by_hour[h])
        )
        day_hr.append(
            statistics.mean(float(r["heart_rate"]) for h in (9, 10, 16) for r in by_hour[h])
        )
        steps = [float(r["steps"]) for r in readings]
        assert steps == sorted(steps)  # cumulative
        steps_night += steps[6 * 60] - steps[0]
        steps_day += steps[20 * 60] - steps[8 * 60]
        for r in readings:
            assert 88 <= r["spo2"] <= 100 and 31 <= r["skin_temp_c"] <= 37.5
            assert 40 <= r["heart_rate"] <= 125
        battery = [r["battery"] for r in readings]
        assert all(b <= a or b >= 99 for a, b in itertools.pairwise(battery))
    assert statistics.mean(night_hr) < statistics.mean(day_hr) - 8
    assert steps_day > 20 * max(steps_night, 1)


def test_smoke_readings_are_quiet_and_seasonal(fleet: Fleet) -> None:
    summer = datetime(2026, 7, 20, 15, tzinfo=TZ).timestamp()
    winter_c: list[float] = []
    summer_c: list[float] = []
    for s in fleet.smoke[:200]:
        assert isinstance(s, SmokeSim)
        for t, temps in ((NOW + 15 * 3600, winter_c), (summer, summer_c)):
            *_, (topic, payload) = s.telemetry(t, t)
            v = reading(topic, payload, t).values
            assert 0 <= v["obscuration_pct_m"] < 0.5 and 0 <= v["co_ppm"] < 20
            temps.append(float(v["temperature_c"]))
    assert 20 < statistics.mean(winter_c) < 25 < statistics.mean(summer_c) < 30


def test_gate_traffic_peaks_morning_and_evening(fleet: Fleet) -> None:
    gate = next(g for g in fleet.gates if g.device_id.endswith("-main"))
    by_hour: Counter[int] = Counter()
    t = NOW
    while t < NOW + 7 * 86400:
        t = gate.next_passage(t)
        by_hour[int(((t - NOW) % 86400) // 3600)] += 1
    assert by_hour[8] > 4 * by_hour[3] and by_hour[18] > 4 * by_hour[3]
    assert by_hour[8] > by_hour[13] < by_hour[18]
    per_day = sum(by_hour.values()) / 7
    assert per_day == pytest.approx(gate.daily_passages, rel=0.1)


def test_status_and_seq_per_device(fleet: Fleet) -> None:
    w = fleet.wearables[0]
    first = reading(*w.status(NOW), NOW)
    assert first.event == "online" and first.attrs["fw"] == w.fw
    seqs = [reading(t, p, NOW).seq for t, p in w.telemetry(NOW + 60, NOW + 60)]
    assert seqs == [first.seq + 1 if first.seq is not None else None]
    assert isinstance(decode("community/y/wearable/x/telemetry", b"{", NOW), DeadLetter)

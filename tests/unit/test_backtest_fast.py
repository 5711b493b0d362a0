"""The backtest's fast path (:mod:`rules.replay`) against the straightforward replay: generated
rule files and readings, evaluated row by row both ways (every transition, every tick, every
state at the end), and whole backtests over a journal, fast and full, in one and two
processes."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.noise import FlapGate
from ingest import rows
from ingest.journal import Journal
from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Building, Device, Registry, Resident
from rules.backtest import backtest
from rules.baselines import Baselines, HourBaseline
from rules.engine import RuleEngine
from rules.model import Rule, builtin_pack, load_rules
from rules.replay import FastRows
from rules.transitions import Transition
from tests.alerting import TZ

T0 = 1_764_547_200.0  # 2025-12-01 08:00 local
LAT, LON = 36.06, 103.83
WEARABLES = ("w0", "w1", "w2")
SMOKES = ("s0", "s1")
GATES = ("g0", "g1")
STRANGERS = ("x0", "x1")
"""Not in the registry (the engine keeps at most ``max_unregistered`` of them)."""


def registry() -> Registry:
    devices = [
        Device(device_id=d, kind="wearable", compound="c1", building="b1",
               unit=f"1-1-{10 + i}", resident_id=f"r{i}")
        for i, d in enumerate(WEARABLES)
    ] + [
        Device(device_id=d, kind="smoke", compound="c1", building="b1", unit=f"1-1-{10 + i}")
        for i, d in enumerate(SMOKES)
    ] + [
        Device(device_id="g0", kind="gate", compound="c1", building="b1"),
        Device(device_id="g1", kind="gate", compound="c1"),
    ]  # fmt: skip
    residents = [
        Resident(resident_id="r0", building="b1", unit="1-1-10", allowed_area=(LAT, LON, 300.0),
                 thresholds={"heart_rate_high": 100.0}),
        Resident(resident_id="r1", building="b1", unit="1-1-11", allowed_area=(LAT, LON, 150.0)),
        Resident(resident_id="r2", building="b1", unit="1-1-12"),
    ]  # fmt: skip
    return Registry("y", buildings=[Building(building="b1", compound="c1")], devices=devices,
                    residents=residents)  # fmt: skip


# ------------------------------------------------------------------------------- rule files

_BASE = {"severity": "minor", "signal": "supervisory", "route": "caretaker", "summary": "s"}
durations = st.sampled_from([0, 20, 60, 150])
windows = st.sampled_from([None, {"hours": "08:10-08:40"}, {"hours": "22:00-08:20"}])


@st.composite
def thresholds(draw: st.DrawFn) -> dict[str, Any]:
    kind, metric, lo, hi = draw(
        st.sampled_from(
            [
                ("wearable", "heart_rate", 40, 140),
                ("wearable", "spo2", 85, 99),
                ("wearable", "battery", 5, 40),
                ("smoke", "co_ppm", 0, 80),
                ("smoke", "battery", 5, 40),
            ]
        )
    )
    level = draw(st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi])))
    gap = draw(st.integers(0, 10))
    rule: dict[str, Any] = {
        "kind": kind,
        "type": "threshold",
        "metric": metric,
        "for": draw(durations),
    }
    if draw(st.booleans()):
        rule |= {"above": level, "clear": level - gap}
        if metric == "heart_rate" and draw(st.booleans()):
            rule["override"] = "heart_rate_high"
    else:
        rule |= {"below": level, "clear": level + gap}
    if draw(st.booleans()):
        rule["max_gap"] = draw(st.sampled_from([30, 90, 400]))
    return rule


@st.composite
def baselines(draw: st.DrawFn) -> dict[str, Any]:
    by = draw(st.integers(5, 30))
    side = "above_by" if draw(st.booleans()) else "below_by"
    base = {side: by, "clear_by": draw(st.integers(0, by - 1)), "days": 3, "min_days": 1}
    return {"kind": "wearable", "type": "threshold", "metric": "heart_rate",
            "baseline": base, "for": draw(durations)}  # fmt: skip


@st.composite
def zones(draw: st.DrawFn) -> dict[str, Any]:
    return {"kind": "wearable", "type": "zone", "for": draw(durations),
            "margin_m": draw(st.sampled_from([0, 25, 100]))}  # fmt: skip


@st.composite
def combos(draw: st.DrawFn) -> dict[str, Any]:
    scope = draw(st.sampled_from(["device", "device", "device", "unit"]))
    conds: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 3))):
        form = draw(st.sampled_from(["level", "level", "unchanged", "event"]))
        if form == "level":
            metric, level = draw(st.sampled_from([("heart_rate", 100), ("spo2", 92)]))
            level += draw(st.integers(-15, 15))
            c: dict[str, Any] = (
                {"metric": metric, "above": level} if metric == "heart_rate"
                else {"metric": metric, "below": level}
            )  # fmt: skip
            c["for"] = draw(durations)
        elif form == "unchanged":
            c = {"metric": "steps", "unchanged": draw(st.sampled_from([30, 120]))}
        else:
            c = {"event": "fall", "within": draw(st.sampled_from([60, 300]))}
        conds.append(c)
    if scope == "unit":
        conds.append({"kind": "smoke", "metric": "co_ppm", "above": draw(st.integers(5, 60))})
    form = draw(st.sampled_from(["all", "all", "any"]))
    rule = {"kind": "wearable", "type": form, "scope": scope, "conditions": conds}
    if draw(st.booleans()):
        rule["max_gap"] = draw(st.sampled_from([45, 400]))
    return rule


others = st.sampled_from(
    [
        {"kind": "wearable", "type": "absence", "for": 120},
        {"kind": "smoke", "type": "absence", "for": 300, "streams": ["telemetry"]},
        {"kind": "gate", "type": "absence", "for": 200, "where": {"building": True}},
        {"kind": "wearable", "type": "event", "events": ["fall"],
         "verify": {"cancel_events": ["fall_cancelled"], "within": 30}},
        {"kind": "wearable", "type": "event", "events": ["removed"], "clear_events": ["worn"]},
        {"kind": "smoke", "type": "event", "events": ["alarm"], "clear_events": ["alarm_clear"]},
        {"kind": "gate", "type": "count", "event": "denied", "threshold": 3, "window": 60},
        {"kind": "gate", "type": "event", "events": ["granted"], "where": {"building": True}},
    ]
)  # fmt: skip


@st.composite
def rule_files(draw: st.DrawFn) -> list[dict[str, Any]]:
    forms = st.one_of(
        thresholds(), thresholds(), thresholds(), baselines(), zones(), combos(), others
    )
    out = []
    for i, rule in enumerate(draw(st.lists(forms, min_size=1, max_size=8))):
        rule = {"id": f"r{i}", **_BASE, **rule}
        if (w := draw(windows)) is not None and rule["type"] != "absence":
            rule["active"] = w
        out.append(rule)
    return out


def load(rule_dicts: list[dict[str, Any]]) -> list[Rule]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tried.yaml"
        path.write_text(yaml.safe_dump({"rules": rule_dicts}, sort_keys=False), encoding="utf-8")
        return load_rules([path])


# ------------------------------------------------------------------------------- readings

Body = dict[str, Any]
number = st.one_of(
    st.integers(30, 150), st.floats(30, 150), st.sampled_from([math.nan, True, "high", None])
)


@st.composite
def steps(draw: st.DrawFn) -> tuple[float, str, str, float, Body]:
    """(seconds after the previous message, device, stream, lag, body)."""
    device = draw(st.sampled_from(WEARABLES * 3 + SMOKES * 2 + GATES + STRANGERS))
    kind = _kind(device)
    gap = draw(st.sampled_from([0.0, 0.4, 3.0, 9.0, 31.0, 130.0]))
    lag = draw(st.sampled_from([0.05, 0.05, 0.05, 2.0, 75.0, 400.0, -1.0]))
    if kind == "gate" or draw(st.integers(0, 9)) == 0:
        events = {"wearable": ["fall", "fall_cancelled", "removed", "worn", "sos"],
                  "smoke": ["alarm", "alarm_clear", "fault"],
                  "gate": ["granted", "denied", "denied", "forced"]}[kind]  # fmt: skip
        return gap, device, "event", lag, {"event": draw(st.sampled_from(events))}
    body: Body
    if kind == "wearable":
        hr = draw(st.one_of(*[st.integers(60, 80)] * 4, st.integers(30, 150), number))
        body = {"heart_rate": hr, "spo2": draw(st.one_of(st.integers(93, 99), st.integers(80, 99))),
                "battery": draw(st.sampled_from([80] * 12 + [40, 12, 3])),
                "steps": draw(st.sampled_from([1000, 1000, 1000, 1005, 2000]))}  # fmt: skip
        if draw(st.integers(0, 4)):
            dist = draw(st.sampled_from([0.0, 0.0005, 0.0015, 0.003, 0.01]))
            body |= {"lat": LAT + dist, "lon": LON - dist / 2}
        if not draw(st.integers(0, 9)):
            del body[draw(st.sampled_from(sorted(body)))]  # a reading without a field
    else:
        body = {"co_ppm": draw(st.one_of(*[st.integers(0, 3)] * 4, st.integers(0, 90), number)),
                "battery": draw(st.sampled_from([80, 30, 10]))}  # fmt: skip
    return gap, device, "telemetry", lag, body


def _kind(device: str) -> str:
    return {"w": "wearable", "s": "smoke", "g": "gate", "x": "wearable"}[device[0]]


def journal_rows(items: list[tuple[float, str, str, float, Body]]) -> list[rows.Row]:
    """The rows a journal would hold for these messages (payload as the edge stores it)."""
    out: list[rows.Row] = []
    received = T0
    for i, (gap, device, stream, lag, body) in enumerate(items):
        received += gap
        ts = received - lag
        values = {k: v for k, v in body.items() if v is not None}
        payload = json.dumps({"seq": i, **values})
        event = body.get("event") if stream == "event" else None
        out.append((i + 1, device, _kind(device), stream, ts, received, i, event, None, payload))
    return out


def _sorted(ts: list[Transition]) -> list[Transition]:
    return sorted(ts, key=lambda t: (t.rule_id, t.device_id, t.action, t.at))


def _baselines(seed: int) -> Baselines:
    hours = [HourBaseline(h, 70.0 + (seed + h) % 20, 4.0, 3) if (seed + h) % 3 else None
             for h in range(24)]  # fmt: skip
    return Baselines(TZ, T0, {("w0", ("heart_rate", 3, 1)): hours})


# ------------------------------------------------------------------------------- the tests


Items = list[tuple[float, str, str, float, Body]]
Restored = list[tuple[int, str]]
restores = st.lists(st.tuples(st.integers(0, 25), st.sampled_from(WEARABLES + SMOKES)), max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_files(), st.lists(steps(), min_size=40, max_size=200), restores, st.integers(0, 5))
def test_fast_rows_evaluate_as_the_engine(
    rule_dicts: list[dict[str, Any]], items: Items, restored: Restored, seed: int
) -> None:
    compare_rows(load(rule_dicts), items, restored, seed)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps(), min_size=40, max_size=200), restores)
def test_fast_rows_evaluate_the_pack_as_the_engine(items: Items, restored: Restored) -> None:
    compare_rows(load_rules([builtin_pack()]), items, restored, 0)


def compare_rows(rules: list[Rule], items: Items, restored: Restored, seed: int) -> None:
    """Both ways, row by row: the same transitions from every row and tick, the same state."""
    now = [T0]
    full = RuleEngine(rules, registry(), lambda: now[0], max_unregistered=1, tz=TZ)
    fast_engine = RuleEngine(rules, registry(), lambda: now[0], max_unregistered=1, tz=TZ)
    for slot, device in restored:  # alerts open from before: firing at the start
        if slot < len(rules):
            full.restore(rules[slot].id, device, T0 - 60)
            fast_engine.restore(rules[slot].id, device, T0 - 60)
    if seed:
        full.set_baselines(_baselines(seed))
        fast_engine.set_baselines(_baselines(seed))
    fast = FastRows(fast_engine, "y")
    next_tick = T0 + 1
    for i, row in enumerate(journal_rows(items)):
        t = max(now[0], row[5])
        while next_tick <= t:
            now[0] = next_tick
            assert _sorted(full.tick(next_tick)) == _sorted(fast_engine.tick(next_tick))
            next_tick += 1
        now[0] = t
        if seed and i == len(items) // 2:  # baselines recomputed half way
            full.set_baselines(_baselines(seed + 1))
            fast_engine.set_baselines(_baselines(seed + 1))
        expected = full.evaluate(rows.to_reading(row, "y"))
        assert _sorted(fast.evaluate(row)) == _sorted(expected), row
    for device in (*WEARABLES, *SMOKES, *GATES, *STRANGERS):
        assert fast_engine.export_state(device) == full.export_state(device), device
    assert (fast_engine.out_of_order, fast_engine.errors) == (full.out_of_order, full.errors)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_files(), rule_files(), st.lists(steps(), min_size=1, max_size=150))
def test_backtests_fast_and_full_agree(
    tried: list[dict[str, Any]],
    in_force: list[dict[str, Any]],
    items: list[tuple[float, str, str, float, Body]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.db"
        journal = Journal(path)
        for row in journal_rows(items):
            _id, device, kind, stream, ts, received, _seq, _event, _flag, payload = row
            body = {"ts": round(ts * 1000), **json.loads(payload)}
            r = decode(topic_for("y", kind, device, stream), json.dumps(body).encode(), received)
            if isinstance(r, Reading):
                journal.write_batch([r], [])
        journal.close()
        end = max(T0 + 600, journal_rows(items)[-1][5] + 300)
        reports = [
            backtest(
                path,
                load(tried),
                load(in_force),
                registry(),
                since=T0 + 120,
                until=end,
                tz=TZ,
                warmup_s=120,
                gate=lambda clock: FlapGate(threshold=2, window_s=120, clock=clock),
                max_unregistered=1,
                jobs=jobs,
                fast=fast,
            )
            for fast, jobs in ((False, 1), (True, 1), (True, 2))
        ]
    figures = [(r.new, r.in_force, r.rows) for r in reports]
    assert figures[1] == figures[0]
    assert figures[2] == figures[0]

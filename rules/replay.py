"""The rules worker's and the backtest's evaluation of journal rows: what
``engine.evaluate(rows.to_reading(row))`` does, with the common case done inline on the row's
columns.

A day of the community is millions of telemetry rows, nearly all of which move no rule: a
heart rate below its level, a detector's CO at zero. For such a row a threshold rule only
notes the reading's event time, a combination's conditions only fold the values in, an
absence only notes the device was heard. :class:`FastRows` does exactly that on the parsed
payload, without building a :class:`~ingest.payloads.Reading`; any row that may move a rule
(past a level, while firing past its clear level, out of order, a device's first reading, an
event or status) goes to the engine's own rule code with the reading the rules worker would
build. The engine's behaviour is not changed; tests/unit/test_backtest_fast.py replays
generated rule files and readings both ways and compares every transition, every device's
state and the engine's counters.

The rules worker evaluates with it too, so it keeps what the worker relies on: every device a
row touched is marked for saving (``engine.take_dirty``), a registry swapped in
(``engine.set_registry``) makes it look every device up anew, and so does a device the engine
forgot. tests/unit/test_rules_worker_fast.py runs the worker's old and new path over the same
rows, with registry swaps, and compares transitions and saved state.

It reads the engine's and the combinations' private parts (``rules.combos``' condition
classes, the engine's per-device state): a change there fails that test rather than the
backtest's figures silently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

from pydantic_core import from_json

from ingest import rowcodec, rows
from ingest.payloads import Reading
from rules.combos import CondState, _Cond, _LevelCond, _UnchangedCond
from rules.compiled import Absence, BaselineLevel, Combo, Dev, Level, LevelState, Zone
from rules.engine import RuleEngine
from rules.transitions import Transition

__all__ = ["FastRows"]

_NUMBER: Final = frozenset({bool, int, float})
_PLAIN, _BASELINE, _ZONE = 0, 1, 2


def _loads(payload: str) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


class FastRows:
    """Evaluates journal rows against one engine, as the engine would evaluate their readings."""

    def __init__(self, engine: RuleEngine, community: str) -> None:
        self.engine = engine
        self.community = community
        names = rows._VALUES  # the fields to_reading reads as values, per (kind, stream)
        kinds = {k for k, _ in engine._heard} | set(engine._telemetry)
        kinds |= {k for k, s in engine._combos if s == "telemetry"}
        self._plans: dict[str, _Plan] = {}
        for kind in kinds:
            known = names.get((kind, "telemetry"), frozenset())
            levels: list[tuple[int, Level, str, float]] = []
            for lv in engine._telemetry.get(kind, ()):
                if isinstance(lv, Zone):  # reads lat and lon: skipped when readings lack them
                    mode, metric = _ZONE, "lat" if {"lat", "lon"} <= known else ""
                else:
                    mode = _BASELINE if isinstance(lv, BaselineLevel) else _PLAIN
                    metric = lv.metric if lv.metric in known else ""
                if metric:  # else never a value: the engine never calls the rule
                    levels.append((mode, lv, metric, lv.sign))
            combos: list[tuple[Combo, list[tuple[int, _Cond, str]], list[int]]] = []
            slow: list[Combo] = []
            for combo in engine._combos.get((kind, "telemetry"), ()):
                if combo.unit or combo.rule.kind != kind:
                    slow.append(combo)
                    continue
                conds = combo.conditions
                on_values = [(c.index, c, c.metric) for c in conds.telemetry.get(kind, ())]
                off = [c.index for c in conds.conds if isinstance(c, _LevelCond)]
                combos.append(
                    (combo, [x for x in on_values if x[2] in known], off if conds.all else [])
                )
            self._plans[kind] = _Plan(
                engine._heard.get((kind, "telemetry"), []), levels, combos, slow, bool(known)
            )
        self._known: dict[str, list[Any]] = {}
        """Devices seen: [kind, state, plan, the absences that apply to it, and while it is at
        rest its :class:`_Quiet` (until a reading may move one of its rules)]. An entry whose
        state the engine dropped since (it forgot a device not in the registry) is stale,
        looked up anew on its device's next reading, and swept out when the entries pass
        :meth:`_limit`, so that made-up device ids cannot grow it past what the engine keeps."""
        self._registry = engine.registry
        """The registry ``_known`` was built with: a swap (:meth:`RuleEngine.set_registry`)
        changes thresholds, areas, which absences apply and who is registered, so it is
        built again."""

    def evaluate(self, row: rows.Row) -> list[Transition]:
        """The transitions ``engine.evaluate(rows.to_reading(row, community))`` returns."""
        device_id = row[1]
        eng = self.engine
        if eng.registry is not self._registry:
            self._known.clear()
            self._registry = eng.registry
        if row[3] != "telemetry":
            known = self._known.get(device_id)
            if known is not None:
                known[4] = None
            return eng.evaluate(rows.to_reading(row, self.community))
        kind, ts, received = row[2], row[4], row[5]
        out: list[Transition] = []
        eng._dirty.add(device_id)  # as engine.evaluate: the worker saves its state
        known = self._known.get(device_id)
        # (a device forgotten by the engine since has a new state: looked up anew)
        if known is not None and known[0] == kind and eng._devs.get(device_id) is known[1]:
            _, dev, plan, heard, q = known
            if dev.unregistered:
                eng._touch_unregistered(device_id, received)
        else:
            q = None
            dev = eng._devs.get(device_id) or eng._dev(device_id, self.community)
            if dev.unregistered:
                eng._touch_unregistered(device_id, received)
            found = self._plans.get(kind)
            if found is None:
                return out
            plan = found
            heard = [ab for ab in plan.absences if ab.applies(dev)]
            if len(self._known) >= self._limit():
                self._sweep()
            known = self._known[device_id] = [kind, dev, plan, heard, None]
        for ab in heard:  # Absence.heard, inline while the device is not silent
            if device_id in ab.silent:
                try:
                    ab.heard(dev, received, out)
                except Exception as e:
                    eng._failed(ab, device_id, e)
            else:
                waiting = ab.waiting
                waiting[device_id] = received
                waiting.move_to_end(device_id)
        data: dict[str, Any] = {}
        stored = row[9] if plan.parse else None
        compact = stored.__class__ is bytes
        if plan.parse and not compact:  # a row written as JSON text
            try:
                parsed = from_json(stored)  # type: ignore[arg-type]
            except ValueError:
                parsed = _loads(stored)  # type: ignore[arg-type]
            if parsed.__class__ is dict:
                data = parsed
        if q is not None and q.baselines is eng.baselines:
            # _Quiet: a reading that leaves the device at rest. A compact payload's fields are
            # looked up by their stored keys (rowcodec.keys_of), without naming them all
            keyed: dict[Any, Any] = data
            levels, unchanged = q.levels, q.unchanged
            if compact:
                keyed = rowcodec.fields(stored)  # type: ignore[arg-type]
                levels, unchanged = q.levels_by_key, q.unchanged_by_key
            get = keyed.get
            v: Any
            for metric, lo, hi, states in levels:
                v = get(metric)
                if type(v) in _NUMBER:
                    if ts < states[0].last_ts or not lo <= v * 1.0 <= hi:
                        break  # (older than one seen: the rules' code counts it)
                    for st in states:
                        st.last_ts = ts
            else:
                if not q.zones or _quiet_zones(q, _LatLon(keyed) if compact else data, ts):
                    for metric, gap, cs in unchanged:
                        v = get(metric)
                        if type(v) in _NUMBER and ts >= cs.last_ts:
                            fv = float(v)
                            if cs.value is None or fv != cs.value or ts - cs.last_ts > gap:
                                cs.value, cs.start = fv, ts
                            cs.last_ts = ts
                    return out
            # not at rest after all: the rules' own code, to which what was applied above
            # (event times of rules the reading leaves at rest) is the same as applying it again
        if compact:
            data = rowcodec.load(stored, ts, row[6])  # type: ignore[arg-type]
        self._values(plan, row, dev, data, out)
        if known is not None:
            known[4] = _Quiet.of(plan, eng, dev)
        return out

    def _limit(self) -> int:
        eng = self.engine
        return 2 * (len(eng.registry.devices) + eng.max_unregistered) + 1024

    def _sweep(self) -> None:
        """Drop the entries of devices whose state the engine no longer holds."""
        devs = self.engine._devs
        self._known = {d: k for d, k in self._known.items() if devs.get(d) is k[1]}

    def _values(
        self, plan: _Plan, row: rows.Row, dev: Dev, data: dict[str, Any], out: list[Transition]
    ) -> None:
        """The level rules and combinations, each as the engine runs it (with the quiet
        cases inline)."""
        eng = self.engine
        device_id, kind, ts = row[1], row[2], row[4]
        reading: Reading | None = None
        v: Any
        for mode, lv, metric, sign in plan.levels:
            if mode == _ZONE:
                if dev.area is None:
                    continue  # measure() is None: the engine skips the rule
                lat: Any = data.get("lat")
                lon: Any = data.get("lon")
                if type(lat) not in _NUMBER or type(lon) not in _NUMBER:
                    continue  # not among the reading's values: measure() is None
                v = lv.measure(dev, {"lat": lat, "lon": lon})
                if v is None:
                    continue
            else:
                v = data.get(metric)
                if type(v) not in _NUMBER:
                    continue
            st = dev.levels.get(lv.slot)
            if st is not None and ts >= st.last_ts:
                if mode == _BASELINE:
                    b = eng.baselines
                    if not st.firing and (not b or (device_id, lv.spec) not in b.table):  # type: ignore[attr-defined]
                        continue  # no baseline: the rule does not apply
                else:
                    x = v * sign
                    if st.firing:
                        if x >= st.clr:
                            st.last_ts = ts
                            continue
                    elif x <= st.trig:
                        st.last_ts = ts
                        st.start = None
                        continue
            if reading is None:
                reading = rows.to_reading(row, self.community)
            try:
                lv.on_value(eng, dev, reading, v, out)
            except Exception as e:
                eng._failed(lv, device_id, e)
        for combo, on_values, off in plan.combos:
            cst = dev.combos.get(combo.slot)
            try:
                if cst is None:
                    if reading is None:
                        reading = rows.to_reading(row, self.community)
                    combo.on_reading(eng, dev, reading, out)
                    continue
                conds = cst.conds
                for index, c, metric in on_values:  # Conditions.update
                    v = data.get(metric)
                    if type(v) in _NUMBER:
                        c.on_value(conds[index], ts, float(v))
                if not cst.firing and any(not conds[index].on for index in off):
                    continue  # "all" with a level condition off: does not hold
                if reading is None:
                    reading = rows.to_reading(row, self.community)
                combo._judge(dev, cst, [(kind, cst)], reading, out)
            except Exception as e:
                eng._failed(combo, device_id, e)
        if plan.slow:
            if reading is None:
                reading = rows.to_reading(row, self.community)
            for combo in plan.slow:
                try:
                    combo.on_reading(eng, dev, reading, out)
                except Exception as e:
                    eng._failed(combo, device_id, e)


_LAT: Final = rowcodec.key_of("lat")
_LON: Final = rowcodec.key_of("lon")


class _LatLon:
    """``lat`` and ``lon`` of a compact payload's stored fields, by name (for the zones)."""

    __slots__ = ("keyed",)

    def __init__(self, keyed: dict[Any, Any]) -> None:
        self.keyed = keyed

    def get(self, name: str) -> Any:
        return self.keyed.get(_LAT if name == "lat" else _LON)


def _quiet_zones(q: _Quiet, data: dict[str, Any] | _LatLon, ts: float) -> bool:
    for zone, st in q.zones:
        lat: Any = data.get("lat")
        lon: Any = data.get("lon")
        if type(lat) in _NUMBER and type(lon) in _NUMBER:
            d = zone.measure(q.dev, {"lat": lat, "lon": lon})
            if d is not None:
                if ts < st.last_ts or not d * 1.0 <= st.trig:
                    return False  # (older than one seen: the rule's code counts it)
                st.last_ts = ts
    return True


@dataclass(frozen=True, slots=True)
class _Quiet:
    """A device at rest: its level rules neither firing nor in an episode, its combinations
    ("all" of conditions, one of them a level) not firing and their level conditions off. A
    reading inside every level's band only moves the rules' event times."""

    dev: Dev
    """The device's state it was made from (an unregistered device forgotten starts anew)."""
    baselines: object
    """The baselines it was made with (a new computation may give the device one)."""
    levels: list[tuple[str, float, float, list[LevelState | CondState]]]
    """Per metric: the band of values that leaves its threshold rules and the level
    conditions of its combinations at rest, and their states (all at the same event time)."""
    zones: list[tuple[Zone, LevelState]]
    unchanged: list[tuple[str, float, CondState]]
    """Unchanged conditions of combinations: (metric, gap, state)."""
    levels_by_key: list[tuple[int | str, float, float, list[LevelState | CondState]]]
    unchanged_by_key: list[tuple[int | str, float, CondState]]
    """``levels`` and ``unchanged`` with each metric as the key of a compact payload's field
    (:func:`ingest.rowcodec.key_of`)."""

    @classmethod
    def of(cls, plan: _Plan, eng: RuleEngine, dev: Dev) -> _Quiet | None:
        if plan.slow:
            return None
        bands: dict[str, tuple[float, float, list[LevelState | CondState]]] = {}

        def band(metric: str, sign: float, trig: float, st: LevelState | CondState) -> bool:
            lo, hi, states = bands.get(metric, (-math.inf, math.inf, []))
            if states and states[0].last_ts != st.last_ts:
                return False
            if sign > 0:
                hi = min(hi, trig)
            else:
                lo = max(lo, -trig)
            bands[metric] = (lo, hi, [*states, st])
            return True

        zones: list[tuple[Zone, LevelState]] = []
        for mode, lv, metric, sign in plan.levels:
            st = dev.levels.get(lv.slot)
            if mode == _ZONE:
                if dev.area is None:
                    continue
            elif st is None and not lv.applies(dev):
                continue  # never a state: the rule does not apply to the device
            if st is None or st.firing or st.start is not None:
                return None
            if mode == _BASELINE:
                b = eng.baselines
                if b and (dev.device_id, lv.spec) in b.table:  # type: ignore[attr-defined]
                    return None
                continue
            if mode == _ZONE:
                assert isinstance(lv, Zone)
                zones.append((lv, st))
                continue
            if not band(metric, sign, st.trig, st):
                return None
        unchanged: list[tuple[str, float, CondState]] = []
        for combo, on_values, off in plan.combos:
            cst = dev.combos.get(combo.slot)
            if not off or cst is None or cst.firing:
                return None
            if all(cst.conds[i].on for i in off):
                return None
            for index, c, metric in on_values:
                cs = cst.conds[index]
                if isinstance(c, _LevelCond):
                    if cs.on or cs.start is not None or not band(metric, c.sign, c.trig, cs):
                        return None
                elif isinstance(c, _UnchangedCond):
                    unchanged.append((metric, c.gap, cs))
                else:
                    return None
        levels = [(m, lo, hi, states) for m, (lo, hi, states) in bands.items()]
        if any(m in ("ts", "seq") for m in (*bands, *(u[0] for u in unchanged))):
            return None  # (never a value: rows.to_reading reads neither as one)
        key = rowcodec.key_of
        return cls(
            dev,
            eng.baselines,
            levels,
            zones,
            unchanged,
            [(key(m), lo, hi, states) for m, lo, hi, states in levels],
            [(key(m), gap, cs) for m, gap, cs in unchanged],
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a telemetry row of one kind is evaluated against."""

    absences: list[Absence]
    levels: list[tuple[int, Level, str, float]]
    """(mode, rule, field read, sign) of the level rules (threshold, baseline, zone)."""
    combos: list[tuple[Combo, list[tuple[int, _Cond, str]], list[int]]]
    """Device-scope combinations: (rule, its conditions on values, and for ``all``, the
    indexes of its level conditions)."""
    slow: list[Combo]
    """Combinations over a unit: always the engine's code."""
    parse: bool
    """Whether the readings of the kind carry values at all."""

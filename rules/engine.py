"""The rule engine: stateful evaluation of readings in event time, state per (rule, device).

Rules are indexed by device kind and stream (and event name), so a reading costs only the rules
that apply to it. A failing rule is logged, counted in ``errors`` and never stops the others."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any, Final, Literal

from ingest.payloads import Reading
from ingest.topics import STREAMS
from registry.models import Registry
from rules.baselines import Baselines
from rules.combos import ComboState, Conditions
from rules.matches import Transition
from rules.metrics import RULE_ERRORS
from rules.model import (
    AbsenceRule,
    ComboRule,
    CountRule,
    EventRule,
    Rule,
    ThresholdRule,
    ZoneRule,
)
from rules.windows import Window

__all__ = ["LATE_S", "RuleEngine"]

log = logging.getLogger(__name__)

LATE_S: Final = 60.0
"""A transition caused by a reading that arrived more than this after its ``ts`` is late."""
UNREGISTERED_IDLE_S: Final = 86_400.0
"""A device not in the registry and not heard for this long is forgotten."""
_EARTH_M: Final = 6_371_008.8
_NEVER: Final = -math.inf
Clock = Callable[[], float]
Action = Literal["fire", "clear"]
Area = tuple[float, float, float, float]
"""(lat, lon, radius_m, cos(lat)) of a resident's allowed area."""


@dataclass(slots=True)
class _LevelState:
    trig: float
    clr: float
    last_ts: float = _NEVER
    start: float | None = None
    firing: bool = False


@dataclass(slots=True)
class _OpenState:
    firing: bool = False
    since: float = _NEVER
    cleared: float = _NEVER
    pending: tuple[float, float] | None = None
    """A verification window under way: (event time of the fire, when paging starts)."""


@dataclass(slots=True)
class _CountState:
    times: deque[float]
    firing: bool = False


@dataclass(slots=True)
class _Dev:
    """Per device: labels for transitions, the wearer's area, and per-rule state by slot."""

    device_id: str
    labels: dict[str, str]
    area: Area | None
    unregistered: bool = False
    levels: dict[int, _LevelState] = field(default_factory=dict)
    events: dict[int, _OpenState] = field(default_factory=dict)
    combos: dict[int, ComboState] = field(default_factory=dict)


class _Compiled:
    """A rule made ready for evaluation; ``slot`` indexes its state in :class:`_Dev`."""

    def __init__(self, rule: Rule, slot: int, tz: tzinfo = UTC) -> None:
        self.rule = rule
        self.id = rule.id
        self.slot = slot
        self.hours = Window(rule.active, tz) if rule.active is not None else None
        self.in_building = rule.where.building if rule.where is not None else None

    def applies(self, dev: _Dev) -> bool:
        """Whether the rule's ``where`` admits the device."""
        return self.in_building is None or ("building" in dev.labels) == self.in_building

    def active(self, ts: float) -> bool:
        """Whether the rule may fire from a reading of event time ``ts`` (its time window)."""
        return self.hours is None or self.hours.contains(ts)

    def make(
        self, action: Action, dev: _Dev, at: float, late: bool = False, value: float | None = None,
        page_at: float | None = None, reason: str = "",
    ) -> Transition:  # fmt: skip
        r = self.rule
        log.debug("rule %s %s for device %s", r.id, action, dev.device_id)
        return Transition(
            action, r.id, dev.device_id, r.kind, r.severity, r.signal, r.route, at, r.summary,
            late, value, dict(dev.labels), page_at, reason,
        )  # fmt: skip

    def restore(self, engine: RuleEngine, dev: _Dev, since: float) -> bool:
        return False


class _Level(_Compiled):
    """A measured value past a trigger level for ``for``, cleared past a clear level."""

    sign = 1.0  # -1 for a ``below`` rule: values and levels negated, the test is always ``>``
    metric = ""  # the telemetry field read directly; empty when measure() computes the value

    def __init__(self, rule: ThresholdRule | ZoneRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.for_ = rule.for_
        self.gap = rule.gap

    def measure(self, dev: _Dev, values: dict[str, float | bool]) -> float | None:
        raise NotImplementedError

    def levels(self, registry: Registry, dev: _Dev) -> tuple[float, float] | None:
        """(trigger, clear), signed; None when the rule does not apply to the device."""
        raise NotImplementedError

    def state(self, registry: Registry, dev: _Dev) -> _LevelState | None:
        st = dev.levels.get(self.slot)
        if st is None and self.applies(dev) and (lv := self.levels(registry, dev)) is not None:
            st = dev.levels[self.slot] = _LevelState(*lv)
        return st

    def on_value(
        self, eng: RuleEngine, dev: _Dev, r: Reading, v: float, out: list[Transition]
    ) -> None:
        st = dev.levels.get(self.slot) or self.state(eng.registry, dev)
        if st is None:
            return
        ts, last = r.ts, st.last_ts
        if ts < last:  # out of order: never moves the episode backwards
            eng.out_of_order += 1
            return
        st.last_ts = ts
        x = v * self.sign
        if st.firing:
            if x < st.clr:
                st.firing = False
                st.start = None
                out.append(self.make("clear", dev, ts, r.lag > LATE_S, v))
        elif x > st.trig:
            if st.start is None or ts - last > self.gap:  # unobserved gap: the episode restarts
                st.start = ts
            if ts - st.start >= self.for_ and self.active(ts):
                st.firing = True
                out.append(self.make("fire", dev, st.start, r.lag > LATE_S, v))
        else:
            st.start = None

    def restore(self, engine: RuleEngine, dev: _Dev, since: float) -> bool:
        st = self.state(engine.registry, dev)
        if st is not None:
            st.firing, st.start = True, since
        return st is not None


class _Threshold(_Level):
    def __init__(self, rule: ThresholdRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.metric = rule.metric
        self.sign = 1.0 if rule.above is not None else -1.0
        self.trig = rule.above if rule.above is not None else rule.below or 0.0
        self.clr = rule.clear if rule.clear is not None else self.trig
        self.override = rule.override

    def levels(self, registry: Registry, dev: _Dev) -> tuple[float, float] | None:
        trig = self.trig
        if self.override is not None:
            trig = registry.threshold(dev.device_id, self.override, trig)
        return trig * self.sign, (self.clr + trig - self.trig) * self.sign


class _Baseline(_Level):
    """A threshold relative to the device's own baseline at the hour of each reading: levels
    move with the hour; without a baseline (too little history) the rule does not apply —
    an episode under way pauses, an alert already firing may still clear."""

    def __init__(self, rule: ThresholdRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        assert rule.baseline is not None
        b = rule.baseline
        self.metric = rule.metric
        self.sign = b.sign
        self.by, self.clear_by = b.offset, b.clear_by
        self.spec = (rule.metric, b.days, b.min_days)

    def levels(self, registry: Registry, dev: _Dev) -> tuple[float, float] | None:
        return math.inf, math.inf  # set from the baseline at each reading

    def on_value(
        self, eng: RuleEngine, dev: _Dev, r: Reading, v: float, out: list[Transition]
    ) -> None:
        st = self.state(eng.registry, dev)
        assert st is not None
        base = eng.baselines.level(dev.device_id, self.spec, r.ts) if eng.baselines else None
        if base is None:
            if not st.firing:
                return
            st.trig, st.clr = math.inf, -math.inf  # hold: no level to clear against
        else:
            s = self.sign
            st.trig, st.clr = (base + s * self.by) * s, (base + s * self.clear_by) * s
        super().on_value(eng, dev, r, v, out)


class _Zone(_Level):
    def __init__(self, rule: ZoneRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.margin = rule.margin_m

    def measure(self, dev: _Dev, values: dict[str, float | bool]) -> float | None:
        area, lat, lon = dev.area, values.get("lat"), values.get("lon")
        if area is None or lat is None or lon is None:
            return None
        dy = math.radians(lat - area[0])
        dx = math.radians(lon - area[1]) * area[3]
        return _EARTH_M * math.hypot(dx, dy)  # equirectangular: metres-accurate at this scale

    def levels(self, registry: Registry, dev: _Dev) -> tuple[float, float] | None:
        if dev.area is None:
            return None
        radius = dev.area[2]
        return radius, max(radius - self.margin, radius / 2)


class _Event(_Compiled):
    """Fires on each event; with clear events, once per episode."""

    def __init__(self, rule: EventRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.stateful = bool(rule.clear_events)
        self.verify = rule.verify
        self.cancels = frozenset(rule.verify.cancel_events if rule.verify else ())
        self.persist = rule.persist
        self.wait = rule.wait
        self.keeps = self.stateful or self.verify is not None
        """Whether it holds state per device (an episode, or a verification under way)."""

    def on_event(
        self, eng: RuleEngine, dev: _Dev, r: Reading, fires: bool, out: list[Transition]
    ) -> None:
        ts, late = r.ts, r.lag > LATE_S
        if fires and not (self.active(ts) and self.applies(dev)):
            return
        page_at = None if self.wait is None else min(ts, r.received) + self.wait
        if not self.keeps:
            out.append(self.make("fire", dev, ts, late))
            return
        st = dev.events.get(self.slot) or dev.events.setdefault(self.slot, _OpenState())
        if not fires and r.event in self.cancels:
            self._cancel(st, dev, r, out)
            return
        if not self.stateful:
            out.append(self.make("fire", dev, ts, late, page_at=page_at))
            if self.verify is not None and page_at is not None:
                st.pending = (ts, page_at)
            return
        if fires:
            if st.firing:
                return
            out.append(self.make("fire", dev, ts, late, page_at=page_at))
            if ts < st.cleared:  # an old episode whose clear we already saw: report, then close
                out.append(self.make("clear", dev, st.cleared, late, reason=self._short(ts)))
            else:
                st.firing, st.since = True, ts
                if self.verify is not None and page_at is not None:
                    st.pending = (ts, page_at)
        else:
            st.cleared = max(st.cleared, ts)
            if st.firing and ts >= st.since:
                st.firing = False
                st.pending = None
                out.append(self.make("clear", dev, ts, late, reason=self._short(st.since, ts)))

    def _short(self, since: float, ts: float | None = None) -> str:
        """Why a clear came so soon: it did not persist (a pre-alarm; not paged)."""
        persist = self.persist
        end = ts if ts is not None else since
        if persist is None or end - since >= persist:
            return ""
        return (
            f"did not persist {persist:g} s (cleared after {end - since:.0f} s): a pre-alarm,"
            " nobody was paged"
        )

    def _cancel(self, st: _OpenState, dev: _Dev, r: Reading, out: list[Transition]) -> None:
        """A cancel event (``fall_cancelled``): within the window of the fire before it, the
        alert is resolved and nobody is paged; after it, the cancel changes nothing."""
        assert self.verify is not None
        pending, within = st.pending, self.verify.within
        if pending is None or not pending[0] <= r.ts <= pending[0] + within:
            return
        st.pending = None
        st.firing = False
        after = r.ts - pending[0]
        paged = (
            "nobody was paged"
            if r.received <= pending[1]
            else "it arrived after the window: the first page had gone out"
        )
        reason = (
            f"cancelled on the device ({r.event}) {after:.0f} s after, within the"
            f" {within:g} s verification window: {paged}"
        )
        out.append(self.make("clear", dev, r.ts, r.lag > LATE_S, reason=reason))

    def restore(self, engine: RuleEngine, dev: _Dev, since: float) -> bool:
        if self.stateful:
            st = dev.events.setdefault(self.slot, _OpenState())
            st.firing, st.since = True, since
        return self.stateful


class _Combo(_Compiled):
    """All (or any) of several conditions, on one device or over the devices of its unit."""

    def __init__(self, rule: ComboRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.conditions = Conditions(rule)
        self.unit = rule.scope == "unit"

    def on_reading(self, eng: RuleEngine, dev: _Dev, r: Reading, out: list[Transition]) -> None:
        conds = self.conditions
        st = dev.combos.get(self.slot) or dev.combos.setdefault(self.slot, conds.new())
        conds.update(st, r)
        if not self.unit:
            self._judge(dev, st, [(r.kind, st)], r, out)
            return
        unit = dev.labels.get("unit")
        if unit is None or dev.unregistered:
            return
        members: list[tuple[str, ComboState]] = []
        holder: tuple[_Dev, ComboState] | None = None
        for device_id, kind in eng.unit_members(unit):
            d = eng._devs.get(device_id)
            if kind == self.rule.kind and holder is None:
                d = d or eng._dev(device_id)
                holder = (d, d.combos.get(self.slot) or d.combos.setdefault(self.slot, conds.new()))
            cs = d.combos.get(self.slot) if d is not None else None
            if cs is not None:
                members.append((kind, cs))
                if cs.firing and kind == self.rule.kind and d is not None:
                    holder = (d, cs)
        if holder is not None:
            if holder[0] is not dev:
                eng._dirty.add(holder[0].device_id)
            self._judge(holder[0], holder[1], members, r, out)

    def _judge(
        self,
        dev: _Dev,
        st: ComboState,
        members: list[tuple[str, ComboState]],
        r: Reading,
        out: list[Transition],
    ) -> None:
        at = r.ts
        holds = self.conditions.judge(members, at)
        if holds and not st.firing and self.active(at) and self.applies(dev):
            st.firing, st.since = True, at
            out.append(self.make("fire", dev, at, r.lag > LATE_S))
        elif not holds and st.firing and at >= st.since:
            st.firing = False
            out.append(self.make("clear", dev, at, r.lag > LATE_S))

    def restore(self, engine: RuleEngine, dev: _Dev, since: float) -> bool:
        st = dev.combos.setdefault(self.slot, self.conditions.new())
        st.firing, st.since = True, since
        return True


class _Count(_Compiled):
    """N events from one device within a window of event time."""

    def __init__(self, rule: CountRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.n = rule.threshold
        self.window = rule.window
        self.seen: dict[str, _CountState] = {}
        self.new: Callable[[], _CountState] = lambda: _CountState(deque(maxlen=rule.threshold))

    def on_event(
        self, eng: RuleEngine, dev: _Dev, r: Reading, fires: bool, out: list[Transition]
    ) -> None:
        ts, late, device_id = r.ts, r.lag > LATE_S, r.device_id
        if not (self.active(ts) and self.applies(dev)):  # only events inside its window count
            return
        st = self.seen.get(device_id) or self.seen.setdefault(device_id, self.new())
        dq = st.times
        if dq and ts < dq[-1]:
            eng.out_of_order += 1
            return
        if st.firing and (len(dq) < self.n or ts - dq[0] > self.window):
            st.firing = False
            at = dq[0] + self.window if len(dq) == self.n else ts
            out.append(self.make("clear", dev, at, late))
        dq.append(ts)
        if not st.firing and len(dq) == self.n and ts - dq[0] <= self.window:
            st.firing = True
            out.append(self.make("fire", dev, ts, late, float(self.n)))

    def expire(self, eng: RuleEngine, now: float, out: list[Transition]) -> None:
        for device_id, st in list(self.seen.items()):
            dq = st.times
            if st.firing:
                if len(dq) < self.n or now - dq[0] > self.window:
                    st.firing = False
                    eng._dirty.add(device_id)
                    at = dq[0] + self.window if len(dq) == self.n else now
                    out.append(self.make("clear", eng._dev(device_id), at))
            elif not dq or now - dq[-1] > self.window:
                del self.seen[device_id]
                eng._dirty.add(device_id)

    def restore(self, engine: RuleEngine, dev: _Dev, since: float) -> bool:
        self.seen.setdefault(dev.device_id, self.new()).firing = True
        return True


class _Absence(_Compiled):
    """Devices in order of last heard (the reading's receive time, so that evaluating the
    journal again gives the same answer), and those silent."""

    def __init__(self, rule: AbsenceRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.for_ = rule.for_
        self.waiting: OrderedDict[str, float] = OrderedDict()
        self.silent: dict[str, float] = {}

    def heard(self, dev: _Dev, now: float, out: list[Transition]) -> None:
        if not self.applies(dev):
            return
        if self.silent.pop(dev.device_id, None) is not None:
            out.append(self.make("clear", dev, now))
        else:
            self.waiting.pop(dev.device_id, None)
        self.waiting[dev.device_id] = now

    def expire(self, eng: RuleEngine, now: float, out: list[Transition]) -> None:
        waiting, deadline = self.waiting, now - self.for_
        opened = _NEVER
        if self.hours is not None:  # silence counts only inside the window
            found = self.hours.opened_at(now)
            if found is None:
                return
            opened = found
        while waiting:
            device_id, last = next(iter(waiting.items()))
            if max(last, opened) > deadline:
                break
            del waiting[device_id]
            self.silent[device_id] = last
            eng._dirty.add(device_id)
            out.append(self.make("fire", eng._dev(device_id), max(last, opened) + self.for_))

    def restore(self, engine: RuleEngine, dev: _Dev, since: float) -> bool:
        self.waiting.pop(dev.device_id, None)
        self.silent[dev.device_id] = since
        return True


class RuleEngine:
    """Evaluates readings against rules. Call :meth:`tick` about once a second, from the same
    thread (or under the same lock) as :meth:`evaluate`: it fires absences and ends count windows.
    Threshold ``for`` durations complete in event time, on readings, never on ticks."""

    def __init__(
        self,
        rules: Iterable[Rule],
        registry: Registry,
        clock: Clock = time.time,
        *,
        max_unregistered: int = 10_000,
        tz: tzinfo = UTC,
        baselines: Baselines | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.tz = tz
        """The community's time zone: rules' ``active`` windows are local days and hours."""
        self.baselines = baselines
        """Personal baselines (:mod:`rules.baselines`); swap with :meth:`set_baselines`."""
        self.max_unregistered = max_unregistered
        self._unregistered: OrderedDict[str, float] = OrderedDict()
        self._dirty: set[str] = set()
        """Devices whose state changed since :meth:`take_dirty` (what the worker must save)."""
        self.errors: Counter[str] = Counter()  # exceptions per rule id
        self.out_of_order = 0  # (rule, reading) pairs ignored as older than one already seen
        self.rules: tuple[Rule, ...] = tuple(r for r in rules if r.enabled)
        self._devs: dict[str, _Dev] = {}
        self._telemetry: dict[str, list[_Level]] = {}
        self._events: dict[tuple[str, str], list[tuple[_Event | _Count, bool]]] = {}
        self._heard: dict[tuple[str, str], list[_Absence]] = {}
        self._absences: list[_Absence] = []
        self._counts: list[_Count] = []
        self._combos: dict[tuple[str, str], list[_Combo]] = {}
        self._units: dict[str, list[tuple[str, str]]] | None = None
        self._zones = False
        self._compiled = [self._compile(rule, slot) for slot, rule in enumerate(self.rules)]
        self._unit_scope = any(isinstance(c, _Combo) and c.unit for c in self._compiled)
        self._by_id = {c.id: c for c in self._compiled}
        if len(self._by_id) != len(self._compiled):
            raise ValueError("duplicate rule ids")
        self._seed(clock())

    def _compile(self, rule: Rule, slot: int) -> _Compiled:
        kind, tz = rule.kind, self.tz
        if isinstance(rule, ThresholdRule | ZoneRule):
            lv: _Level
            if isinstance(rule, ZoneRule):
                lv = _Zone(rule, slot, tz)
            else:
                lv = (
                    _Threshold(rule, slot, tz)
                    if rule.baseline is None
                    else _Baseline(rule, slot, tz)
                )
            self._zones |= isinstance(rule, ZoneRule)
            self._telemetry.setdefault(kind, []).append(lv)
            return lv
        if isinstance(rule, EventRule):
            ev = _Event(rule, slot, tz)
            cancels = rule.verify.cancel_events if rule.verify else ()
            for fires, names in ((True, rule.events), (False, (*rule.clear_events, *cancels))):
                for name in names:
                    self._events.setdefault((kind, name), []).append((ev, fires))
            return ev
        if isinstance(rule, CountRule):
            cnt = _Count(rule, slot, tz)
            self._events.setdefault((kind, rule.event), []).append((cnt, True))
            self._counts.append(cnt)
            return cnt
        if isinstance(rule, ComboRule):
            combo = _Combo(rule, slot, tz)
            conds = combo.conditions
            streams = {(k, "telemetry") for k in conds.telemetry if conds.telemetry[k]}
            streams |= {(k, "event") for k, _ in conds.events}
            for key in streams:
                self._combos.setdefault(key, []).append(combo)
            return combo
        ab = _Absence(rule, slot, tz)
        for stream in rule.streams or STREAMS:
            self._heard.setdefault((kind, stream), []).append(ab)
        self._absences.append(ab)
        return ab

    def _seed(self, now: float) -> None:
        """Registered devices are expected to be heard: their silence counts from ``now``."""
        for ab in self._absences:
            placed = ab.in_building
            for d in self.registry.devices.values():
                if placed is not None and (d.building is not None) != placed:
                    continue
                if d.kind == ab.rule.kind and d.device_id not in ab.silent:
                    ab.waiting.setdefault(d.device_id, now)

    def unit_members(self, unit: str) -> list[tuple[str, str]]:
        """(device id, kind) of the registered devices of ``unit``, in id order."""
        if self._units is None:
            units: dict[str, list[tuple[str, str]]] = {}
            for d in sorted(self.registry.devices.values(), key=lambda d: d.device_id):
                if d.unit:
                    units.setdefault(d.unit, []).append((d.device_id, d.kind))
            self._units = units
        return self._units.get(unit, [])

    def set_baselines(self, baselines: Baselines | None) -> None:
        """Use newly computed baselines (from the thread that evaluates)."""
        self.baselines = baselines

    def _labels(self, device_id: str, community: str) -> dict[str, str]:
        d = self.registry.device(device_id)
        if d is None:
            return {"community": community, "registered": "false"}
        labels = {"community": community, "compound": d.compound}
        where = {"building": d.building, "unit": d.unit, "resident_id": d.resident_id}
        labels.update((k, v) for k, v in where.items() if v)
        return labels

    def _area(self, device_id: str) -> Area | None:
        resident = self.registry.resident_of(device_id) if self._zones else None
        if resident is None or resident.allowed_area is None:
            return None
        lat, lon, radius = resident.allowed_area
        return lat, lon, radius, math.cos(math.radians(lat))

    def _dev(self, device_id: str, community: str | None = None) -> _Dev:
        """The state of one device, created on first use."""
        dev = self._devs.get(device_id)
        if dev is None:
            labels = self._labels(device_id, community or self.registry.community)
            unregistered = self.registry.device(device_id) is None
            dev = _Dev(device_id, labels, self._area(device_id), unregistered)
            self._devs[device_id] = dev
        return dev

    def _touch_unregistered(self, device_id: str, at: float) -> None:
        """Keep at most ``max_unregistered`` devices that are not in the registry, most
        recently heard first: ids made up by a broken or hostile client cannot grow memory."""
        seen = self._unregistered
        seen[device_id] = at
        seen.move_to_end(device_id)
        while len(seen) > self.max_unregistered:
            self.forget(next(iter(seen)))

    def _forget_idle(self, now: float) -> None:
        """Forget devices not in the registry that were not heard for ``UNREGISTERED_IDLE_S``."""
        seen = self._unregistered
        while seen:
            device_id, at = next(iter(seen.items()))
            if at > now - UNREGISTERED_IDLE_S:
                break
            self.forget(device_id)

    def _failed(self, c: _Compiled, device_id: str, exc: Exception) -> None:
        self.errors[c.id] += 1
        RULE_ERRORS.labels(c.id).inc()
        log.error("rule %s failed for device %s: %s", c.id, device_id, type(exc).__name__)
        log.debug("rule %s failure", c.id, exc_info=exc)  # tracebacks may carry values

    def evaluate(self, reading: Reading) -> list[Transition]:
        """Evaluate one reading; returns the fires and clears it causes."""
        out: list[Transition] = []
        device_id, kind, stream = reading.device_id, reading.kind, reading.stream
        dev = self._devs.get(device_id) or self._dev(device_id, reading.community)
        self._dirty.add(device_id)
        if dev.unregistered:
            self._touch_unregistered(device_id, reading.received)
        absences = self._heard.get((kind, stream))
        if absences and not (stream == "status" and reading.event == "offline"):
            now = reading.received
            for ab in absences:
                try:
                    ab.heard(dev, now, out)
                except Exception as e:
                    self._failed(ab, device_id, e)
        if stream == "telemetry":
            values = reading.values
            for lv in self._telemetry.get(kind, ()):
                try:
                    v = values.get(lv.metric) if lv.metric else lv.measure(dev, values)
                    if v is not None:
                        lv.on_value(self, dev, reading, v, out)
                except Exception as e:
                    self._failed(lv, device_id, e)
        elif stream == "event" and reading.event is not None:
            for ev, fires in self._events.get((kind, reading.event), ()):
                try:
                    ev.on_event(self, dev, reading, fires, out)
                except Exception as e:
                    self._failed(ev, device_id, e)
        if self._combos:
            for combo in self._combos.get((kind, stream), ()):
                try:
                    combo.on_reading(self, dev, reading, out)
                except Exception as e:
                    self._failed(combo, device_id, e)
        return out

    def tick(self, now: float | None = None) -> list[Transition]:
        """Fire absences and clear expired count windows as of ``now`` (default: the clock)."""
        now = self.clock() if now is None else now
        out: list[Transition] = []
        expiring: list[_Absence | _Count] = [*self._absences, *self._counts]
        for c in expiring:
            try:
                c.expire(self, now, out)
            except Exception as e:
                self._failed(c, "*", e)
        self._forget_idle(now)
        return out

    def restore(self, rule_id: str, device_id: str, since: float) -> bool:
        """Mark an alert still open downstream (after a restart) as firing, so the rule can clear
        it; False when the rule is unknown or has no state (an event rule without clear)."""
        c = self._by_id.get(rule_id)
        return c is not None and c.restore(self, self._dev(device_id), since)

    def set_registry(self, registry: Registry) -> None:
        """Use a reloaded registry: labels, overrides and areas are looked up again."""
        self.registry = registry
        self._units = None
        for device_id, dev in self._devs.items():
            dev.labels = self._labels(device_id, dev.labels["community"])
            dev.area = self._area(device_id)
            for slot, st in list(dev.levels.items()):
                c = self._compiled[slot]
                lv = c.levels(registry, dev) if isinstance(c, _Level) else None
                if lv is None:
                    del dev.levels[slot]
                else:
                    st.trig, st.clr = lv
        self._seed(self.clock())

    def forget(self, device_id: str) -> None:
        """Drop every state of a device (decommissioned, or removed from the registry)."""
        self._dirty.add(device_id)
        self._unregistered.pop(device_id, None)
        self._devs.pop(device_id, None)
        for ab in self._absences:
            ab.waiting.pop(device_id, None)
            ab.silent.pop(device_id, None)
        for cnt in self._counts:
            cnt.seen.pop(device_id, None)

    def state_size(self) -> int:
        """Number of (rule, device) states held."""
        n = sum(len(d.levels) + len(d.events) + len(d.combos) for d in self._devs.values())
        n += sum(len(ab.waiting) + len(ab.silent) for ab in self._absences)
        return n + sum(len(c.seen) for c in self._counts)

    # ------------------------------------------------------------------ state, saved and loaded

    def take_dirty(self) -> set[str]:
        """The devices whose state changed since the last call (and forget them)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def export_state(self, device_id: str) -> dict[str, Any] | None:
        """Everything the engine holds for one device, as JSON-able data keyed by rule id (so a
        changed rule pack loads what still applies); None when it holds nothing."""
        out: dict[str, Any] = {}
        dev = self._devs.get(device_id)
        if dev is not None:
            rules = self._compiled
            levels = {
                rules[slot].id: [_out(st.last_ts), st.start, st.firing]
                for slot, st in dev.levels.items()
                if st.firing or st.start is not None or st.last_ts != _NEVER
            }
            events = {
                rules[slot].id: [st.firing, _out(st.since), _out(st.cleared), st.pending]
                for slot, st in dev.events.items()
                if st.firing or st.cleared != _NEVER or st.pending is not None
            }
            combos = {rules[slot].id: st.export() for slot, st in dev.combos.items()}
            if levels:
                out["l"] = levels
            if events:
                out["e"] = events
            if combos:
                out["m"] = combos
        counts = {
            c.id: [list(st.times), st.firing]
            for c in self._counts
            if (st := c.seen.get(device_id)) is not None
        }
        absent: dict[str, list[Any]] = {}
        for ab in self._absences:
            if (t := ab.waiting.get(device_id)) is not None:
                absent[ab.id] = ["w", t]
            elif (t := ab.silent.get(device_id)) is not None:
                absent[ab.id] = ["s", t]
        if counts:
            out["c"] = counts
        if absent:
            out["a"] = absent
        if dev is not None and dev.unregistered and device_id in self._unregistered:
            out["u"] = self._unregistered[device_id]
        return out or None

    def load_state(self, states: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Load what :meth:`export_state` saved (after a restart), replacing what the engine
        seeded for those devices. State of rules no longer in the pack is dropped. Returns the
        number of devices loaded."""
        n = 0
        counts = {c.id: c for c in self._counts}
        absences = {ab.id: ab for ab in self._absences}
        for device_id, data in states:
            n += 1
            dev = self._dev(device_id)
            for rule_id, (last_ts, start, firing) in data.get("l", {}).items():
                lv = self._by_id.get(rule_id)
                if isinstance(lv, _Level) and (st := lv.state(self.registry, dev)) is not None:
                    st.last_ts, st.start, st.firing = _in(last_ts), start, bool(firing)
            for rule_id, (firing, since, cleared, *more) in data.get("e", {}).items():
                ev = self._by_id.get(rule_id)
                if isinstance(ev, _Event) and ev.keeps:
                    pending = more[0] if more and more[0] and ev.verify else None
                    dev.events[ev.slot] = _OpenState(
                        bool(firing) and ev.stateful,
                        _in(since),
                        _in(cleared),
                        None if pending is None else (float(pending[0]), float(pending[1])),
                    )
            for rule_id, saved in data.get("m", {}).items():
                combo = self._by_id.get(rule_id)
                if isinstance(combo, _Combo):
                    loaded = ComboState.load(saved, len(combo.conditions.conds))
                    if loaded is not None:
                        dev.combos[combo.slot] = loaded
            for rule_id, (times, firing) in data.get("c", {}).items():
                if (cnt := counts.get(rule_id)) is not None:
                    cs = cnt.new()
                    cs.times.extend(float(t) for t in times)
                    cs.firing = bool(firing)
                    cnt.seen[device_id] = cs
            for ab in self._absences:
                ab.waiting.pop(device_id, None)
                ab.silent.pop(device_id, None)
            for rule_id, (where, t) in data.get("a", {}).items():
                if (found := absences.get(rule_id)) is not None:
                    (found.waiting if where == "w" else found.silent)[device_id] = float(t)
            if dev.unregistered:
                self._unregistered[device_id] = float(data.get("u", self.clock()))
        for ab in self._absences:  # expiry walks them oldest first
            ab.waiting = OrderedDict(sorted(ab.waiting.items(), key=lambda kv: kv[1]))
        self._unregistered = OrderedDict(sorted(self._unregistered.items(), key=lambda kv: kv[1]))
        self._dirty.clear()
        return n


def _out(t: float) -> float | None:
    """-inf (never) as JSON null."""
    return None if t == _NEVER else t


def _in(t: float | None) -> float:
    return _NEVER if t is None else float(t)

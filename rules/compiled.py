"""Each rule type made ready for evaluation: its state per device and how a reading (or a tick)
moves it, in event time. :class:`rules.engine.RuleEngine` indexes them and drives them."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING, Final, Literal

from ingest.payloads import Reading
from registry.models import Registry
from rules.combos import ComboState, Conditions
from rules.model import (
    AbsenceRule,
    ComboRule,
    CountRule,
    EventRule,
    Rule,
    ThresholdRule,
    ZoneRule,
)
from rules.transitions import Transition
from rules.windows import Window

if TYPE_CHECKING:
    from rules.engine import RuleEngine

log = logging.getLogger(__name__)

LATE_S: Final = 60.0
"""A transition caused by a reading that arrived more than this after its ``ts`` is late."""
_EARTH_M: Final = 6_371_008.8
NEVER: Final = -math.inf
Clock = Callable[[], float]
Action = Literal["fire", "clear"]
Area = tuple[float, float, float, float]
"""(lat, lon, radius_m, cos(lat)) of a resident's allowed area."""


@dataclass(slots=True)
class LevelState:
    trig: float
    clr: float
    last_ts: float = NEVER
    start: float | None = None
    firing: bool = False


@dataclass(slots=True)
class OpenState:
    firing: bool = False
    since: float = NEVER
    cleared: float = NEVER
    pending: tuple[float, float] | None = None
    """A verification window under way: (event time of the fire, when paging starts)."""


@dataclass(slots=True)
class CountState:
    times: deque[float]
    firing: bool = False


@dataclass(slots=True)
class Dev:
    """Per device: labels for transitions, the wearer's area, and per-rule state by slot."""

    device_id: str
    labels: dict[str, str]
    area: Area | None
    unregistered: bool = False
    levels: dict[int, LevelState] = field(default_factory=dict)
    events: dict[int, OpenState] = field(default_factory=dict)
    combos: dict[int, ComboState] = field(default_factory=dict)


class Compiled:
    """A rule made ready for evaluation; ``slot`` indexes its state in :class:`Dev`."""

    def __init__(self, rule: Rule, slot: int, tz: tzinfo = UTC) -> None:
        self.rule = rule
        self.id = rule.id
        self.slot = slot
        self.hours = Window(rule.active, tz) if rule.active is not None else None
        self.in_building = rule.where.building if rule.where is not None else None

    def applies(self, dev: Dev) -> bool:
        """Whether the rule's ``where`` admits the device."""
        return self.in_building is None or ("building" in dev.labels) == self.in_building

    def active(self, ts: float) -> bool:
        """Whether the rule may fire from a reading of event time ``ts`` (its time window)."""
        return self.hours is None or self.hours.contains(ts)

    def make(
        self, action: Action, dev: Dev, at: float, late: bool = False, value: float | None = None,
        page_at: float | None = None, reason: str = "",
    ) -> Transition:  # fmt: skip
        r = self.rule
        log.debug("rule %s %s for device %s", r.id, action, dev.device_id)
        return Transition(
            action, r.id, dev.device_id, r.kind, r.severity, r.signal, r.route, at, r.summary,
            late, value, dict(dev.labels), page_at, reason,
        )  # fmt: skip

    def restore(self, engine: RuleEngine, dev: Dev, since: float) -> bool:
        return False


class Level(Compiled):
    """A measured value past a trigger level for ``for``, cleared past a clear level."""

    sign = 1.0  # -1 for a ``below`` rule: values and levels negated, the test is always ``>``
    metric = ""  # the telemetry field read directly; empty when measure() computes the value

    def __init__(self, rule: ThresholdRule | ZoneRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.for_ = rule.for_
        self.gap = rule.gap

    def measure(self, dev: Dev, values: dict[str, float | bool]) -> float | None:
        raise NotImplementedError

    def levels(self, registry: Registry, dev: Dev) -> tuple[float, float] | None:
        """(trigger, clear), signed; None when the rule does not apply to the device."""
        raise NotImplementedError

    def state(self, registry: Registry, dev: Dev) -> LevelState | None:
        st = dev.levels.get(self.slot)
        if st is None and self.applies(dev) and (lv := self.levels(registry, dev)) is not None:
            st = dev.levels[self.slot] = LevelState(*lv)
        return st

    def on_value(
        self, eng: RuleEngine, dev: Dev, r: Reading, v: float, out: list[Transition]
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

    def restore(self, engine: RuleEngine, dev: Dev, since: float) -> bool:
        st = self.state(engine.registry, dev)
        if st is not None:
            st.firing, st.start = True, since
        return st is not None


class Threshold(Level):
    def __init__(self, rule: ThresholdRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.metric = rule.metric
        self.sign = 1.0 if rule.above is not None else -1.0
        self.trig = rule.above if rule.above is not None else rule.below or 0.0
        self.clr = rule.clear if rule.clear is not None else self.trig
        self.override = rule.override

    def levels(self, registry: Registry, dev: Dev) -> tuple[float, float] | None:
        trig = self.trig
        if self.override is not None:
            trig = registry.threshold(dev.device_id, self.override, trig)
        return trig * self.sign, (self.clr + trig - self.trig) * self.sign


class BaselineLevel(Level):
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

    def levels(self, registry: Registry, dev: Dev) -> tuple[float, float] | None:
        return math.inf, math.inf  # set from the baseline at each reading

    def on_value(
        self, eng: RuleEngine, dev: Dev, r: Reading, v: float, out: list[Transition]
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


class Zone(Level):
    def __init__(self, rule: ZoneRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.margin = rule.margin_m

    def measure(self, dev: Dev, values: dict[str, float | bool]) -> float | None:
        area, lat, lon = dev.area, values.get("lat"), values.get("lon")
        if area is None or lat is None or lon is None:
            return None
        dy = math.radians(lat - area[0])
        dx = math.radians(lon - area[1]) * area[3]
        return _EARTH_M * math.hypot(dx, dy)  # equirectangular: metres-accurate at this scale

    def levels(self, registry: Registry, dev: Dev) -> tuple[float, float] | None:
        if dev.area is None:
            return None
        radius = dev.area[2]
        return radius, max(radius - self.margin, radius / 2)


class Event(Compiled):
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
        self, eng: RuleEngine, dev: Dev, r: Reading, fires: bool, out: list[Transition]
    ) -> None:
        ts, late = r.ts, r.lag > LATE_S
        if fires and not (self.active(ts) and self.applies(dev)):
            return
        page_at = None if self.wait is None else min(ts, r.received) + self.wait
        if not self.keeps:
            out.append(self.make("fire", dev, ts, late))
            return
        st = dev.events.get(self.slot) or dev.events.setdefault(self.slot, OpenState())
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

    def _cancel(self, st: OpenState, dev: Dev, r: Reading, out: list[Transition]) -> None:
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
        out.append(self.make("clear", dev, r.ts, r.lag > LATE_S, page_at=pending[1], reason=reason))

    def restore(self, engine: RuleEngine, dev: Dev, since: float) -> bool:
        if self.stateful:
            st = dev.events.setdefault(self.slot, OpenState())
            st.firing, st.since = True, since
        return self.stateful


class Combo(Compiled):
    """All (or any) of several conditions, on one device or over the devices of its unit."""

    def __init__(self, rule: ComboRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.conditions = Conditions(rule)
        self.unit = rule.scope == "unit"

    def on_reading(self, eng: RuleEngine, dev: Dev, r: Reading, out: list[Transition]) -> None:
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
        holder: tuple[Dev, ComboState] | None = None
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
        dev: Dev,
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

    def restore(self, engine: RuleEngine, dev: Dev, since: float) -> bool:
        st = dev.combos.setdefault(self.slot, self.conditions.new())
        st.firing, st.since = True, since
        return True


class Count(Compiled):
    """N events from one device within a window of event time."""

    def __init__(self, rule: CountRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.n = rule.threshold
        self.window = rule.window
        self.seen: dict[str, CountState] = {}
        self.new: Callable[[], CountState] = lambda: CountState(deque(maxlen=rule.threshold))

    def on_event(
        self, eng: RuleEngine, dev: Dev, r: Reading, fires: bool, out: list[Transition]
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

    def restore(self, engine: RuleEngine, dev: Dev, since: float) -> bool:
        self.seen.setdefault(dev.device_id, self.new()).firing = True
        return True


class Absence(Compiled):
    """Devices in order of last heard (the reading's receive time, so that evaluating the
    journal again gives the same answer), and those silent."""

    def __init__(self, rule: AbsenceRule, slot: int, tz: tzinfo = UTC) -> None:
        super().__init__(rule, slot, tz)
        self.for_ = rule.for_
        self.waiting: OrderedDict[str, float] = OrderedDict()
        self.silent: dict[str, float] = {}

    def heard(self, dev: Dev, now: float, out: list[Transition]) -> None:
        if not self.applies(dev):
            return
        if self.silent.pop(dev.device_id, None) is not None:
            out.append(self.make("clear", dev, now))
        else:
            self.waiting.pop(dev.device_id, None)
        self.waiting[dev.device_id] = now

    def expire(self, eng: RuleEngine, now: float, out: list[Transition]) -> None:
        waiting, deadline = self.waiting, now - self.for_
        opened = NEVER
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

    def restore(self, engine: RuleEngine, dev: Dev, since: float) -> bool:
        self.waiting.pop(dev.device_id, None)
        self.silent[dev.device_id] = since
        return True

"""The conditions of a combination rule (``type: all`` / ``type: any``), each a small state
machine per device, in event time:

- a level: ``metric`` past a trigger for ``for`` (episodes restart after a gap, as threshold
  rules do), held until past ``clear``;
- unchanged: ``metric`` reported the same value for ``unchanged`` — judged on the readings
  seen (a device that says nothing proves nothing), and only while its readings are fresh;
- an event: ``event`` seen within ``within`` of the time judged.

The engine (:class:`rules.engine.RuleEngine`) keeps one :class:`ComboState` per device and
rule, updates it from that device's readings, and judges the rule over the device (scope
``device``) or over the devices of its unit (scope ``unit``) at each reading's event time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from ingest.payloads import Reading
from rules.forms import EventCondition, LevelCondition, UnchangedCondition
from rules.model import ComboRule

__all__ = ["ComboState", "CondState", "Conditions"]

_NEVER: Final = -math.inf


@dataclass(slots=True)
class CondState:
    start: float | None = None
    """Level: the episode's start. Unchanged: when the value last changed."""
    on: bool = False
    """Level: holding."""
    last_ts: float = _NEVER
    """The latest reading (event: the latest event) this condition saw."""
    value: float | None = None
    """Unchanged: the value last reported."""

    def export(self) -> list[Any]:
        return [self.start, self.on, None if self.last_ts == _NEVER else self.last_ts, self.value]

    @classmethod
    def load(cls, data: list[Any]) -> CondState:
        start, on, last_ts, value = data
        return cls(start, bool(on), _NEVER if last_ts is None else float(last_ts), value)


@dataclass(slots=True)
class ComboState:
    conds: list[CondState]
    firing: bool = False
    """Set on the device the alert is on."""
    since: float = _NEVER

    def export(self) -> list[Any]:
        since = None if self.since == _NEVER else self.since
        return [self.firing, since, [c.export() for c in self.conds]]

    @classmethod
    def load(cls, data: list[Any], n: int) -> ComboState | None:
        firing, since, conds = data
        if len(conds) != n:  # the rule's conditions changed: start over
            return None
        return cls(
            [CondState.load(c) for c in conds],
            bool(firing),
            _NEVER if since is None else float(since),
        )


class _Cond:
    def __init__(self, index: int, kind: str, gap: float) -> None:
        self.index = index
        self.kind = kind
        self.gap = gap
        self.metric = ""
        self.event = ""

    def on_value(self, cs: CondState, ts: float, v: float) -> None:
        raise NotImplementedError

    def holds(self, cs: CondState, at: float) -> bool:
        raise NotImplementedError


class _LevelCond(_Cond):
    def __init__(self, index: int, kind: str, gap: float, c: LevelCondition) -> None:
        super().__init__(index, kind, max(gap, c.for_))
        self.metric = c.metric
        self.sign = 1.0 if c.above is not None else -1.0
        trig = c.above if c.above is not None else c.below or 0.0
        self.trig = trig * self.sign
        self.clr = (c.clear if c.clear is not None else trig) * self.sign
        self.for_ = c.for_

    def on_value(self, cs: CondState, ts: float, v: float) -> None:
        if ts < cs.last_ts:
            return
        gap = ts - cs.last_ts > self.gap
        cs.last_ts = ts
        x = v * self.sign
        if cs.on and (x < self.clr or gap):
            cs.on, cs.start = False, None
        if not cs.on:
            if x > self.trig:
                if cs.start is None or gap:
                    cs.start = ts
                cs.on = ts - cs.start >= self.for_
            else:
                cs.start = None

    def holds(self, cs: CondState, at: float) -> bool:
        return cs.on and at - cs.last_ts <= self.gap


class _UnchangedCond(_Cond):
    def __init__(self, index: int, kind: str, gap: float, c: UnchangedCondition) -> None:
        super().__init__(index, kind, gap)
        self.metric = c.metric
        self.dur = c.unchanged

    def on_value(self, cs: CondState, ts: float, v: float) -> None:
        if ts < cs.last_ts:
            return
        if cs.value is None or v != cs.value or ts - cs.last_ts > self.gap:
            cs.value, cs.start = v, ts
        cs.last_ts = ts

    def holds(self, cs: CondState, at: float) -> bool:
        return (
            cs.start is not None
            and cs.last_ts - cs.start >= self.dur
            and at - cs.last_ts <= self.gap
        )


class _EventCond(_Cond):
    def __init__(self, index: int, kind: str, gap: float, c: EventCondition) -> None:
        super().__init__(index, kind, gap)
        self.event = c.event
        self.within = c.within

    def seen(self, cs: CondState, ts: float) -> None:
        cs.last_ts = max(cs.last_ts, ts)

    def holds(self, cs: CondState, at: float) -> bool:
        return abs(at - cs.last_ts) <= self.within


class Conditions:
    """A combination rule's conditions, indexed by what they read."""

    def __init__(self, rule: ComboRule) -> None:
        self.all = rule.type == "all"
        gap = rule.max_gap if rule.max_gap is not None else 300.0
        self.conds: list[_Cond] = []
        for i, c in enumerate(rule.conditions):
            kind = c.kind or rule.kind
            if isinstance(c, LevelCondition):
                self.conds.append(_LevelCond(i, kind, gap, c))
            elif isinstance(c, UnchangedCondition):
                self.conds.append(_UnchangedCond(i, kind, gap, c))
            else:
                self.conds.append(_EventCond(i, kind, gap, c))
        self.kinds = frozenset(c.kind for c in self.conds)
        self.telemetry = {
            k: [c for c in self.conds if c.kind == k and c.metric] for k in self.kinds
        }
        self.events = {
            (c.kind, c.event): [e for e in self.conds if e.kind == c.kind and e.event == c.event]
            for c in self.conds
            if c.event
        }

    def new(self) -> ComboState:
        return ComboState([CondState() for _ in self.conds])

    def update(self, st: ComboState, r: Reading) -> None:
        """Fold one reading of a device into that device's state."""
        if r.stream == "telemetry":
            for c in self.telemetry.get(r.kind, ()):
                v = r.values.get(c.metric)
                if v is not None:
                    c.on_value(st.conds[c.index], r.ts, float(v))
        elif r.event is not None:
            for c in self.events.get((r.kind, r.event), ()):
                assert isinstance(c, _EventCond)
                c.seen(st.conds[c.index], r.ts)

    def judge(self, members: list[tuple[str, ComboState]], at: float) -> bool:
        """Whether the rule holds at ``at`` over ``members`` ((kind, state) of each device: one
        for scope device, the unit's for scope unit): a condition holds when it holds on some
        device of its kind."""
        results = (
            any(c.holds(st.conds[c.index], at) for kind, st in members if kind == c.kind)
            for c in self.conds
        )
        return all(results) if self.all else any(results)

"""The rule engine: stateful evaluation of readings in event time, state per (rule, device).

Rules are indexed by device kind and stream (and event name), so a reading costs only the rules
that apply to it. A failing rule is logged, counted in ``errors`` and never stops the others.
The rule types themselves (their state and how readings move it) are in :mod:`rules.compiled`."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from datetime import UTC, tzinfo
from typing import Any, Final

from ingest.payloads import Reading
from ingest.topics import STREAMS
from registry.models import Registry
from rules.baselines import Baselines
from rules.combos import ComboState
from rules.compiled import (
    LATE_S,
    NEVER,
    Absence,
    Area,
    BaselineLevel,
    Clock,
    Combo,
    Compiled,
    Count,
    Dev,
    Event,
    Level,
    OpenState,
    Threshold,
    Zone,
)
from rules.metrics import RULE_ERRORS
from rules.model import ComboRule, CountRule, EventRule, Rule, ThresholdRule, ZoneRule
from rules.transitions import Transition

__all__ = ["LATE_S", "RuleEngine"]

log = logging.getLogger(__name__)

UNREGISTERED_IDLE_S: Final = 86_400.0
"""A device not in the registry and not heard for this long is forgotten."""


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
        self._devs: dict[str, Dev] = {}
        self._telemetry: dict[str, list[Level]] = {}
        self._events: dict[tuple[str, str], list[tuple[Event | Count, bool]]] = {}
        self._heard: dict[tuple[str, str], list[Absence]] = {}
        self._absences: list[Absence] = []
        self._counts: list[Count] = []
        self._combos: dict[tuple[str, str], list[Combo]] = {}
        self._units: dict[str, list[tuple[str, str]]] | None = None
        self._zones = False
        self._compiled = [self._compile(rule, slot) for slot, rule in enumerate(self.rules)]
        self._unit_scope = any(isinstance(c, Combo) and c.unit for c in self._compiled)
        self._by_id = {c.id: c for c in self._compiled}
        if len(self._by_id) != len(self._compiled):
            raise ValueError("duplicate rule ids")
        self._seed(clock())

    def _compile(self, rule: Rule, slot: int) -> Compiled:
        kind, tz = rule.kind, self.tz
        if isinstance(rule, ThresholdRule | ZoneRule):
            lv: Level
            if isinstance(rule, ZoneRule):
                lv = Zone(rule, slot, tz)
            else:
                lv = (
                    Threshold(rule, slot, tz)
                    if rule.baseline is None
                    else BaselineLevel(rule, slot, tz)
                )
            self._zones |= isinstance(rule, ZoneRule)
            self._telemetry.setdefault(kind, []).append(lv)
            return lv
        if isinstance(rule, EventRule):
            ev = Event(rule, slot, tz)
            cancels = rule.verify.cancel_events if rule.verify else ()
            for fires, names in ((True, rule.events), (False, (*rule.clear_events, *cancels))):
                for name in names:
                    self._events.setdefault((kind, name), []).append((ev, fires))
            return ev
        if isinstance(rule, CountRule):
            cnt = Count(rule, slot, tz)
            self._events.setdefault((kind, rule.event), []).append((cnt, True))
            self._counts.append(cnt)
            return cnt
        if isinstance(rule, ComboRule):
            combo = Combo(rule, slot, tz)
            conds = combo.conditions
            streams = {(k, "telemetry") for k in conds.telemetry if conds.telemetry[k]}
            streams |= {(k, "event") for k, _ in conds.events}
            for key in streams:
                self._combos.setdefault(key, []).append(combo)
            return combo
        ab = Absence(rule, slot, tz)
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
        # the community that registers it (several in one installation), else the topic's
        if len(self.registry.parts) > 1:
            community = self.registry.community_of(device_id) or community
        labels = {"community": community}
        labels["compound"] = d.compound
        where = {"building": d.building, "unit": d.unit, "resident_id": d.resident_id}
        labels.update((k, v) for k, v in where.items() if v)
        return labels

    def _area(self, device_id: str) -> Area | None:
        resident = self.registry.resident_of(device_id) if self._zones else None
        if resident is None or resident.allowed_area is None:
            return None
        lat, lon, radius = resident.allowed_area
        return lat, lon, radius, math.cos(math.radians(lat))

    def _dev(self, device_id: str, community: str | None = None) -> Dev:
        """The state of one device, created on first use."""
        dev = self._devs.get(device_id)
        if dev is None:
            labels = self._labels(device_id, community or self.registry.community)
            unregistered = self.registry.device(device_id) is None
            dev = Dev(device_id, labels, self._area(device_id), unregistered)
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

    def _failed(self, c: Compiled, device_id: str, exc: Exception) -> None:
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
        expiring: list[Absence | Count] = [*self._absences, *self._counts]
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
        """Use a reloaded registry: labels, overrides and areas are looked up again. A device
        no longer registered (retired) is no longer awaited: its silence raises nothing; an
        alert of it already open stays until it clears or is resolved."""
        for device_id in self.registry.devices.keys() - registry.devices.keys():
            for ab in self._absences:
                if ab.waiting.pop(device_id, None) is not None:
                    self._dirty.add(device_id)
        self.registry = registry
        self._units = None
        retired: list[str] = []
        for device_id, dev in self._devs.items():
            dev.labels = self._labels(device_id, dev.labels["community"])
            dev.area = self._area(device_id)
            # a device registered since it was first heard (commissioning) is kept like any
            # registered one; a retired one is forgotten once idle, like any unregistered one
            dev.unregistered = registry.device(device_id) is None
            if not dev.unregistered:
                self._unregistered.pop(device_id, None)
            elif device_id not in self._unregistered:
                retired.append(device_id)
            for slot, st in list(dev.levels.items()):
                c = self._compiled[slot]
                lv = c.levels(registry, dev) if isinstance(c, Level) else None
                if lv is None:
                    del dev.levels[slot]
                else:
                    st.trig, st.clr = lv
        now = self.clock()
        for device_id in retired:
            self._touch_unregistered(device_id, now)
        self._seed(now)

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
                if st.firing or st.start is not None or st.last_ts != NEVER
            }
            events = {
                rules[slot].id: [st.firing, _out(st.since), _out(st.cleared), st.pending]
                for slot, st in dev.events.items()
                if st.firing or st.cleared != NEVER or st.pending is not None
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
                if isinstance(lv, Level) and (st := lv.state(self.registry, dev)) is not None:
                    st.last_ts, st.start, st.firing = _in(last_ts), start, bool(firing)
            for rule_id, (firing, since, cleared, *more) in data.get("e", {}).items():
                ev = self._by_id.get(rule_id)
                if isinstance(ev, Event) and ev.keeps:
                    pending = more[0] if more and more[0] and ev.verify else None
                    dev.events[ev.slot] = OpenState(
                        bool(firing) and ev.stateful,
                        _in(since),
                        _in(cleared),
                        None if pending is None else (float(pending[0]), float(pending[1])),
                    )
            for rule_id, saved in data.get("m", {}).items():
                combo = self._by_id.get(rule_id)
                if isinstance(combo, Combo):
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
    return None if t == NEVER else t


def _in(t: float | None) -> float:
    return NEVER if t is None else float(t)

"""Noise control: flapping alerts stay open, and trouble from many devices of one building at
once (a power or network cut) becomes one incident. Alarms never wait for either.

Flapping (:class:`FlapGate`, between the rule engine and the store): a rule that fires and clears
more than ``threshold`` times within ``window_s`` for one device is *flapping*. Its clears are
held back, so the alert stays open (the store gets a fire with the ``flapping=true`` label
instead, which pages nobody: a rematch), until it has been quiet for ``window_s``; then the
last held clear is let through and resolves it. Fires are never held. The gate runs in the rules
worker, which saves the state of the fingerprints it changed (:meth:`FlapGate.take_dirty`,
:meth:`FlapGate.export`) in the transaction that commits the alert changes, so a restart
resumes it (:meth:`FlapGate.load`).

Grouping (the ``start`` and ``group`` stages of :mod:`alerts.stages` ask :func:`groupable` and
:func:`group_size`, with :class:`alerts.config.GroupConfig`): a trouble-signal alert of a
building waits ``wait_s`` before anyone is paged; if by then at least ``threshold``
open trouble alerts of that building were raised within ``window_s``, it becomes part of one
``building_trouble`` incident (route operator) instead of a page of its own. The wait is an
escalation timer row, so it survives a restart. Alarms and supervisory signals are never
grouped and never wait.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from alerts import system
from alerts.db import Writer
from alerts.model import Alert
from rules.transitions import Transition

BUILDING_TROUBLE: Final = system.BUILDING_TROUBLE.id
OWN_RULES: Final = frozenset(
    r.id for r in (system.BUILDING_TROUBLE, system.FIRE_CONFIRMED, system.STAFF_UNREACHABLE)
)
"""Alerts this package raises itself: never grouped."""


@dataclass(slots=True)
class _Flap:
    clears: deque[float] = field(default_factory=deque)
    last_toggle: float = 0.0
    flapping: bool = False
    held: Transition | None = None


class FlapGate:
    """Filters the rule engine's transitions on their way to the store (thread-safe)."""

    def __init__(
        self, threshold: int = 3, window_s: float = 600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self.clock = clock
        self._state: dict[str, _Flap] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def filter(self, transitions: Iterable[Transition]) -> list[Transition]:
        out: list[Transition] = []
        with self._lock:
            now = self.clock()
            for t in transitions:
                out.extend(self._one(t, now))
        return out

    def _one(self, t: Transition, now: float) -> list[Transition]:
        fp = t.fingerprint
        st = self._state.get(fp)
        if st is not None or t.action == "clear":
            self._dirty.add(fp)
        if t.action == "fire":
            if st is not None:
                st.last_toggle = now
                st.held = None  # open again: the held clear is moot
            return [t]
        if st is None:
            st = self._state[fp] = _Flap()
        st.last_toggle = now
        if st.flapping:
            st.held = t
            return []
        while st.clears and st.clears[0] < now - self.window_s:
            st.clears.popleft()
        st.clears.append(now)
        if len(st.clears) <= self.threshold:
            return [t]
        st.flapping, st.held = True, t
        labels = t.labels | {"flapping": "true"}
        return [replace(t, action="fire", labels=labels)]

    def tick(self, now: float | None = None) -> list[Transition]:
        """Clears of alerts quiet for ``window_s`` (they resolve now); forgets old state."""
        released: list[Transition] = []
        with self._lock:
            now = self.clock() if now is None else now
            for fp, st in list(self._state.items()):
                if now - st.last_toggle < self.window_s:
                    continue
                if st.held is not None:
                    released.append(st.held)
                del self._state[fp]
                self._dirty.add(fp)
        return released

    def take_dirty(self) -> set[str]:
        """Fingerprints whose state changed since the last call."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            return dirty

    def export(self, fingerprint: str) -> dict[str, Any] | None:
        """One fingerprint's state as JSON-able data; None when the gate holds none."""
        with self._lock:
            st = self._state.get(fingerprint)
            if st is None:
                return None
            held = None if st.held is None else asdict(st.held)
            return {"c": list(st.clears), "t": st.last_toggle, "f": st.flapping, "h": held}

    def load(self, states: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Replace the whole state with what :meth:`export` saved."""
        with self._lock:
            self._state = {
                fp: _Flap(
                    deque(float(x) for x in d["c"]),
                    float(d["t"]),
                    bool(d["f"]),
                    None if d["h"] is None else Transition(**d["h"]),
                )
                for fp, d in states
            }
            self._dirty.clear()

    def flapping(self, fingerprint: str) -> bool:
        with self._lock:
            st = self._state.get(fingerprint)
            return bool(st and st.flapping)


def groupable(alert: Alert) -> bool:
    """Trouble of a device in a building: may wait to be grouped."""
    return alert.signal == "trouble" and bool(alert.building) and alert.rule_id not in OWN_RULES


def group_size(db: Writer, building: str, since: float) -> int:
    """Open trouble alerts of ``building`` raised since ``since``, incidents not counted."""
    marks = ",".join("?" * len(OWN_RULES))
    rows = db.query(
        "SELECT count(DISTINCT device_id) FROM alerts WHERE building = ? AND signal = 'trouble'"
        f" AND status != 'resolved' AND raised_at >= ? AND rule_id NOT IN ({marks})",
        (building, since, *sorted(OWN_RULES)),
    )
    return int(rows[0][0])


def incident(alert: Alert, devices: int, now: float) -> Transition:
    """The building's trouble incident (fire it again as devices join: a rematch)."""
    lb = alert.labels
    labels: dict[str, str] = {k: lb[k] for k in ("community", "compound", "building") if k in lb}
    labels["devices"] = str(devices)
    return system.BUILDING_TROUBLE.transition(lb["building"], firing=True, at=now, labels=labels)


def incident_clear(building: str, now: float) -> Transition:
    return system.BUILDING_TROUBLE.transition(building, firing=False, at=now)

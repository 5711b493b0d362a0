"""The stages of alerting: one small interface, each stage a small object.

A stage takes an :class:`Item` (an alert, the clock's ``now``, the store change that brought
it or the escalation timer that came due) and passes it on — maybe changed — or stops it by
returning ``None``. A :class:`Pipeline` is a stage made of stages, run in order; the
dispatcher composes them once (:func:`alerts.dispatch.compose`). A stage reads and writes
through the objects it is given (store, timers, outbox, incidents, silences); it never holds
another stage. Each can be run alone on a fake clock: build it, call it with an item.

Paging (the ``page`` stage) and what comes of each delivery are in :mod:`alerts.paging`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from alerts import noise
from alerts.config import FlapConfig, GroupConfig
from alerts.correlation import CORRELATED, FIRE_CONFIRMED, SMOKE_RULES, Correlator
from alerts.db import Writer
from alerts.escalation import Chains, Timer, Timers
from alerts.incidents import Incidents
from alerts.lifecycle import AlertStore
from alerts.model import SYSTEM, Alert, AlertChange, AlertNotFound, NoteAction, Status
from alerts.outbox import Outbox
from alerts.silences import Silences
from rules.transitions import Transition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Item:
    """What flows through the stages."""

    alert: Alert
    now: float
    change: AlertChange | None = None
    """The store change that brought the alert (``None``: a due timer, or a resume)."""
    timer: Timer | None = None
    """The alert's escalation timer, once a stage found it due."""
    moved: tuple[Status, Status] | None = None
    """The alert's incident's status before and after this change (``Refresh``)."""

    @property
    def action(self) -> str | None:
        return None if self.change is None else self.change.action


class Stage(Protocol):
    def __call__(self, item: Item, /) -> Item | None: ...


class Pipeline:
    """Stages run in order until one stops the item; itself a stage."""

    def __init__(self, *stages: Stage) -> None:
        self.stages = stages

    def __call__(self, item: Item) -> Item | None:
        for stage in self.stages:
            out = stage(item)
            if out is None:
                return None
            item = out
        return item

    def __repr__(self) -> str:
        return " → ".join(
            repr(s) if isinstance(s, Pipeline) else type(s).__name__ for s in self.stages
        )


class History:
    """What stages write besides their own tables: notes in an alert's history (they reach the
    live stream too) and alerts of their own (through the store, as a rule's)."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store

    def note(
        self, alert_id: int, action: NoteAction, text: str, data: dict[str, Any] | None = None
    ) -> None:
        with contextlib.suppress(AlertNotFound):
            self.store.add_note(alert_id, SYSTEM, text, action, data)

    def apply(self, t: Transition) -> AlertChange | None:
        try:
            return self.store.apply(t)
        except Exception:
            log.exception("alerting: the store refused %s for %s", t.rule_id, t.device_id)
            return None


# ---------------------------------------------------------------------------- on a change


class Place:
    """Put a raised alert into its incident (a new one of its own, or the open one of its key);
    a rematch raised to critical by a smoke alarm at home joins the fire's."""

    def __init__(self, store: AlertStore, incidents: Incidents) -> None:
        self.store, self.incidents = store, incidents

    def __call__(self, item: Item) -> Item:
        a = item.alert
        if item.action == "rematched":
            if not (
                a.labels.get("correlated") == CORRELATED
                and a.rule_id not in SMOKE_RULES
                and a.incident_id is not None
            ):
                return item
        elif item.change is None and a.incident_id is not None:
            return item  # resumed after a crash: already placed
        incident_id, new = self.incidents.join(a, item.now)
        if incident_id == a.incident_id:
            return item
        old = a.incident_id
        if new and old is None:  # its own incident, placed by join(): nothing else to update
            return replace(item, alert=replace(a, incident_id=incident_id))
        placed = self.store.place(a.id, incident_id, f"part of incident {incident_id}").alert
        self.incidents.refresh(incident_id, item.now)
        if old is not None:
            self.incidents.refresh(old, item.now)
        return replace(item, alert=placed)


class Correlate:
    """A second detector confirms a fire; a smoke alarm at home raises the resident's alerts.
    Correlating a raise again (after a crash) is a rematch at worst, never a second alert."""

    def __init__(self, correlator: Correlator, history: History) -> None:
        self.correlator, self.history = correlator, history

    def __call__(self, item: Item) -> Item:
        for t in self.correlator.on_raised(item.alert, item.now):
            self.history.apply(t)
        return item


class Refresh:
    """The alert's incident follows a change of severity or status."""

    def __init__(self, incidents: Incidents) -> None:
        self.incidents = incidents

    def __call__(self, item: Item) -> Item:
        a, change = item.alert, item.change
        if a.incident_id is None or change is None:
            return item
        if item.action == "rematched":
            if "severity" in change.entry.note:
                self.incidents.refresh(a.incident_id, item.now)
            return item
        return replace(item, moved=self.incidents.refresh(a.incident_id, item.now))


class FlapNote:
    """Say once, in its history, that an alert flaps (kept open, not paged on each toggle)."""

    def __init__(self, config: FlapConfig, history: History) -> None:
        self.config, self.history = config, history
        self._noted: set[int] = set()

    def __call__(self, item: Item) -> Item:
        a = item.alert
        if a.labels.get("flapping") == "true" and a.id not in self._noted:
            self._noted.add(a.id)
            self.history.note(
                a.id,
                "note",
                f"flapping: fired and cleared more than {self.config.threshold} times in "
                f"{self.config.window_s / 60:.0f} min; kept open, not paged on each toggle",
            )
        return item


class Stop:
    """Acknowledged or resolved: no more steps, and what was not sent yet is cancelled."""

    def __init__(self, timers: Timers, outbox: Outbox, history: History) -> None:
        self.timers, self.outbox, self.history = timers, outbox, history

    def __call__(self, item: Item) -> Item:
        a = item.alert
        self.timers.stop(a.id)
        n = self.outbox.cancel(a.id, item.now)
        if n:
            self.history.note(a.id, "notified", f"{n} messages not sent yet were cancelled")
        return item


class Unconfirm:
    """A confirmed fire whose detectors' alarms are all resolved clears (by the rule). As a
    stage: after a smoke alarm resolves; as a sweep: for fires whose detectors cleared while
    the service was down."""

    def __init__(self, store: AlertStore, history: History) -> None:
        self.store, self.history = store, history

    def __call__(self, item: Item) -> Item:
        a = item.alert
        if item.action != "acknowledged" and a.rule_id in SMOKE_RULES and a.building:
            self.sweep(item.now, a.building)
        return item

    def sweep(self, now: float, building: str | None = None) -> None:
        items, _ = self.store.find(
            rule_id=FIRE_CONFIRMED, building=building, open_only=True, limit=500
        )
        for fire in items:
            devices = [d for d in fire.labels.get("devices", "").split(",") if d]
            if any(o.rule_id in SMOKE_RULES for d in devices for o in self.store.open_alerts(d)):
                continue
            self.history.apply(
                Transition(
                    action="clear",
                    rule_id=fire.rule_id,
                    device_id=fire.device_id,
                    kind=fire.kind,
                    severity=fire.severity,
                    signal=fire.signal,
                    route=fire.route,
                    at=max(now, fire.last_match_at),
                    summary=fire.summary,
                    labels=fire.labels,
                )
            )


class Start:
    """Start the alert's escalation timer: a raised alert's chain (or the grouping wait of a
    building's trouble), or, when a rematch changed its severity, the new severity's chain from
    the first step. Passes the item on with its timer when a step is due now."""

    def __init__(
        self,
        timers: Timers,
        chains: Chains,
        group: GroupConfig,
        history: History,
        has_staff: Callable[[], bool],
    ) -> None:
        self.timers, self.chains, self.group = timers, chains, group
        self.history, self.has_staff = history, has_staff

    def __call__(self, item: Item) -> Item | None:
        a, now = item.alert, item.now
        if item.action == "rematched":
            return self._rechain(item) if self._severity_changed(item) else None
        if not self.has_staff():
            return None  # no staff in the registry: alerts are recorded, nobody is paged
        if noise.groupable(a):
            self.timers.start(a.id, "", "grouping", now, now + self.group.wait_s)
            return None
        chain = self.chains.select(a)
        due = max(now, a.page_at or now)  # a verification window holds the chain back
        if self.timers.start(a.id, chain.id, "chain", due, due) and due <= now:
            return self._due(item)
        return None

    @staticmethod
    def _severity_changed(item: Item) -> bool:
        change = item.change
        return (
            change is not None and "severity" in change.entry.note and item.alert.status == "firing"
        )

    def _rechain(self, item: Item) -> Item | None:
        """Start over on the chain for the new severity, now (a grouped trouble raised to an
        alarm no longer waits; a silence is looked at again)."""
        a, now = item.alert, item.now
        chain = self.chains.select(a)
        self.timers.stop(a.id)
        self.history.note(
            a.id, "escalated", f"severity now {a.severity}: chain {chain.id} from the first step"
        )
        return self._due(item) if self.timers.start(a.id, chain.id, "chain", now, now) else None

    def _due(self, item: Item) -> Item | None:
        """The item with its timer, due now and (PostgreSQL) claimed by this dispatcher; None
        when another dispatcher's poll claimed it first (it takes the step)."""
        timer = self.timers.claim(item.alert.id, item.now)
        return None if timer is None else replace(item, timer=timer)


# ---------------------------------------------------------------------------- on a due timer


class Firing:
    """Only a firing alert goes on: its timer ends when it was acknowledged, resolved or
    deleted. Reads the alert afresh (what an earlier stage or a timer holds may be stale)."""

    def __init__(self, store: AlertStore, timers: Timers) -> None:
        self.store, self.timers = store, timers

    def __call__(self, item: Item) -> Item | None:
        assert item.timer is not None
        return self.of(item.timer, item.now, item.change)

    def of(self, timer: Timer, now: float, change: AlertChange | None = None) -> Item | None:
        """The item of a due ``timer``, or ``None`` (its timer stopped) if it is not firing."""
        try:
            a = self.store.get(timer.alert_id)
        except AlertNotFound:
            self.timers.stop(timer.alert_id)
            return None
        if a.status != "firing":
            self.timers.stop(a.id)
            return None
        return Item(alert=a, now=now, change=change, timer=timer)


class Group:
    """A building's trouble that waited ``wait_s``: one of ``threshold`` or more devices in
    trouble there becomes part of one ``building_trouble`` incident (paged once, to the
    operators) instead of a page of its own; a lone one goes on to its chain. The sweep closes
    incidents whose devices are all back."""

    def __init__(
        self, db: Writer, chains: Chains, config: GroupConfig, store: AlertStore, history: History
    ) -> None:
        self.db, self.chains, self.config = db, chains, config
        self.store, self.history = store, history

    def __call__(self, item: Item) -> Item | None:
        a, t, now = item.alert, item.timer, item.now
        assert t is not None
        if t.state != "grouping":
            return item
        assert a.building is not None
        n = noise.group_size(self.db, a.building, now - self.config.window_s)
        if n >= self.config.threshold:
            with self.db.tx() as db:
                if not Timers.finish(db, t):
                    return None
            change = self.history.apply(noise.incident(a, n, now))
            ref = f" #{change.alert.id}" if change is not None else ""
            self.history.note(
                a.id,
                "notified",
                f"not paged on its own: one of {n} devices with trouble "
                f"in building {a.building}, paged as one incident{ref}",
            )
            return None
        chain = self.chains.select(a)
        with self.db.tx() as db:
            if not Timers.move(db, t, now, keep=True, state="chain", chain_id=chain.id, due_at=now):
                return None
        moved = replace(t, chain_id=chain.id, state="chain", step=0, due_at=now, muted_by=None)
        return replace(item, timer=moved)

    def sweep(self, now: float) -> None:
        items, _ = self.store.find(rule_id=noise.BUILDING_TROUBLE, open_only=True, limit=500)
        for inc in items:
            if noise.group_size(self.db, inc.device_id, 0.0) == 0:
                self.history.apply(noise.incident_clear(inc.device_id, now))


class Mute:
    """A silence that matches holds the step back until it ends (recorded, not sent); when it
    is over, the chain goes on where it was."""

    def __init__(self, db: Writer, silences: Silences, history: History, tz: ZoneInfo) -> None:
        self.db, self.silences, self.history, self.tz = db, silences, history, tz

    def __call__(self, item: Item) -> Item | None:
        a, t, now = item.alert, item.timer, item.now
        assert t is not None
        silence = self.silences.muting(a, now)
        if silence is not None:
            with self.db.tx() as db:
                moved = Timers.move(
                    db, t, now, state="muted", muted_by=silence.id, due_at=silence.ends_at
                )
            if moved and t.muted_by != silence.id:
                until = datetime.fromtimestamp(silence.ends_at, self.tz).strftime("%m-%d %H:%M")
                self.history.note(
                    a.id,
                    "muted",
                    f"muted by silence {silence.id} until {until} "
                    f"({silence.reason}; by {silence.author}): recorded, not sent",
                )
            return None
        if t.state != "muted":
            return item
        with self.db.tx() as db:
            if not Timers.move(db, t, now, keep=True, state="chain", muted_by=None, due_at=now):
                return None
        self.history.note(a.id, "notified", f"silence {t.muted_by} is over: paging now")
        return replace(item, timer=replace(t, state="chain", due_at=now, muted_by=None))

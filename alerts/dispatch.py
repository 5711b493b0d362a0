"""The stages after the lifecycle, in order: flapping gate (before the store) → correlate →
group → silence → route → notify → escalate.

The store tells the :class:`Dispatcher` of every change (its subscriber only queues it); one
thread handles them in commit order. A raised alert gets an escalation timer row; the step due
now is taken at once, later ones by :meth:`Dispatcher.poll` (the service's scheduler calls it
every second). Acknowledging or resolving an alert deletes its timer and cancels what was not
sent yet. Whom each step reached and why, and every delivery attempt, go into the alert's
history (``notified``, ``escalated``, ``muted``) through :meth:`AlertStore.add_note`, so they also
reach the live stream.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from alerts import coverage, noise
from alerts.correlation import (
    CORRELATED,
    FIRE_CONFIRMED,
    SMOKE_RULES,
    Correlator,
    synthetic_rules,
)
from alerts.db import Writer
from alerts.escalation import Chains, Timer, Timers, load_chains
from alerts.incidents import Incidents
from alerts.lifecycle import AlertStore
from alerts.messages import Language
from alerts.model import RULE, Alert, AlertChange, AlertNotFound, NoteAction
from alerts.notify import Notifier, Sender
from alerts.outbox import Outbox
from alerts.paging import Pager
from alerts.routing import Router
from alerts.silences import RuleLike, Silence, Silences, SyntheticRule
from registry.models import Registry
from rules.transitions import Transition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Config:
    language: Language = "zh"
    base_url: str = "http://127.0.0.1:8080"
    timezone: str = "Asia/Shanghai"
    chains_file: Path | None = None
    workers: int = 4
    max_attempts: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 120.0
    flap_threshold: int = 3
    flap_window_s: float = 600.0
    group_wait_s: float = 60.0
    group_window_s: float = 3600.0
    group_threshold: int = 5
    community: str = "y"
    sender: Sender | None = field(default=None, compare=False)


class Dispatcher:
    def __init__(
        self,
        store: AlertStore,
        registry: Registry,
        rules: Iterable[RuleLike],
        config: Config = Config(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.tz = ZoneInfo(config.timezone)
        self.chains: Chains = load_chains(config.chains_file)
        self.db = Writer(store.path)
        self.router = Router(registry, self.tz)
        self.correlator = Correlator(registry, store)
        self.timers = Timers(self.db)
        self.outbox = Outbox(self.db)
        extra = [SyntheticRule(*r) for r in synthetic_rules()]
        self.rules = list(rules)
        self._coverage: tuple[Registry, list[coverage.Line]] | None = None
        self._coverage_lock = threading.Lock()
        self.silences = Silences(self.db, [*self.rules, *extra])
        self.incidents = Incidents(self.db)
        self.gate = noise.FlapGate(config.flap_threshold, config.flap_window_s, clock)
        self.notifier = Notifier(
            self.db,
            config.sender,
            workers=config.workers,
            max_attempts=config.max_attempts,
            backoff_s=config.backoff_s,
            backoff_max_s=config.backoff_max_s,
            clock=clock,
            on_result=lambda d, at: self.pager.on_result(d, at),
        )
        self._queue: queue.Queue[AlertChange | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._flap_noted: set[int] = set()
        self.pager = Pager(
            store,
            self.db,
            self.chains,
            self.router,
            self.outbox,
            self.timers,
            language=config.language,
            base_url=config.base_url,
            tz=self.tz,
            community=config.community,
            max_attempts=config.max_attempts,
            clock=clock,
            poll=self.poll,
        )
        self.pager.notifier = self.notifier
        self._last_sweep = 0.0
        self.handled = 0
        self.errors = 0
        """Exceptions caught and logged (tests assert there were none)."""
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        staff = self.router.registry.staff
        if not staff:
            log.warning("alerting: no staff in the registry; alerts are recorded, nobody is paged")
        silent = sorted(sid for sid, s in staff.items() if not s.channels)
        if silent:
            more = f" and {len(silent) - 10} more" if len(silent) > 10 else ""
            log.warning(
                "alerting: %d staff have no notification channel (%s%s); steps that "
                "find only them move on at once",
                len(silent),
                ", ".join(silent[:10]),
                more,
            )
        self._unsubscribe = self.store.subscribe(self._queue.put)
        threading.Thread(target=self._warn_holes, name="duty-coverage", daemon=True).start()
        self.notifier.start()
        self._thread = threading.Thread(target=self._loop, name="dispatch", daemon=True)
        self._thread.start()
        self._resume()

    def coverage(self, week_of: datetime | None = None) -> list[coverage.Line]:
        """Who would be paged first, per chain and place, across a week (see
        :mod:`alerts.coverage`). The roster is weekly: this week's answer is kept until the
        registry changes."""
        registry = self.router.registry
        if week_of is not None:
            return coverage.check(registry, self.chains, self.tz, self.rules, week_of=week_of)
        with self._coverage_lock:
            cached = self._coverage
            if cached is None or cached[0] is not registry:
                lines = coverage.check(registry, self.chains, self.tz, self.rules)
                cached = self._coverage = (registry, lines)
            return cached[1]

    def _warn_holes(self) -> None:
        if not self.router.registry.staff:
            return
        try:
            lines = self.coverage()
            found = coverage.holes(lines)
        except Exception:
            log.exception("duty coverage check failed")
            return
        for places, line in coverage.grouped([line for line in lines if line.holes]):
            for hole in line.holes:
                whom = f" ({hole.residents} residents each)" if hole.residents else ""
                log.warning(
                    "duty coverage: nobody would be paged for %s alerts (chain %s, e.g. %s) at "
                    "%s, %s%s",
                    line.route,
                    line.chain_id,
                    line.rule_id,
                    coverage.places_label(places),
                    hole.label,
                    whom,
                )
        if found:
            log.warning(
                "duty coverage: %d holes in all (`jiayuan duty check` lists them); alerts that "
                "find nobody on duty are recorded as reached by nobody",
                len(found),
            )

    def stop(self) -> None:
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None
        self.notifier.stop()
        self.db.close()

    def set_registry(self, registry: Registry) -> None:
        self.router.registry = registry
        self.correlator.registry = registry

    def filter(self, transitions: Sequence[Transition]) -> list[Transition]:
        """The flapping gate, between the rule engine and the store (any thread)."""
        return self.gate.filter(transitions)

    def poll(self, now: float | None = None) -> int:
        """Take the steps that are due; close building
        incidents whose devices are all back. Returns how many timers were looked at."""
        if self._stopped:
            return 0
        now = self.clock() if now is None else now
        due = self.timers.due(now)
        for timer in due:
            self._guard(self._run, timer, now)
        if now - self._last_sweep >= 30:
            self._last_sweep = now
            self._guard(self._close_incidents, now)
            self._guard(self._clear_confirmations, None, now)
        return len(due)

    def expire_silence(self, silence_id: int, by: str) -> Silence:
        """End a silence now; what it held back and is still firing is paged at once."""
        now = self.clock()
        silence, ended = self.silences.expire(silence_id, by, now)
        if ended and self.timers.release(silence_id, now):
            self.poll(now)
        return silence

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """For tests: every queued change handled and the outbox empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0 and self.notifier.idle():
                return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------------ changes

    def _loop(self) -> None:
        while True:
            change = self._queue.get()
            try:
                if change is None:
                    return
                self._guard(self._handle, change)
                self.handled += 1
            finally:
                self._queue.task_done()

    def _guard(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            self.errors += 1
            log.exception("dispatch: %s failed", getattr(fn, "__name__", fn))

    def _handle(self, change: AlertChange) -> None:
        a, action, now = change.alert, change.action, self.clock()
        if action == "raised":
            self._raised(self._place(a, now), now)
        elif action == "rematched":
            if (
                a.labels.get("correlated") == CORRELATED
                and a.rule_id not in SMOKE_RULES
                and a.incident_id is not None
            ):
                a = self._place(a, now)  # raised to critical by a smoke alarm at home
            if "severity" in change.entry.note and a.incident_id is not None:
                self.incidents.refresh(a.incident_id, now)
            if a.labels.get("flapping") == "true" and a.id not in self._flap_noted:
                self._flap_noted.add(a.id)
                self._note(
                    a.id,
                    "note",
                    f"flapping: fired and cleared more than "
                    f"{self.config.flap_threshold} times in "
                    f"{self.config.flap_window_s / 60:.0f} min; kept open, not paged "
                    "on each toggle",
                )
            if "severity" in change.entry.note and a.status == "firing":
                self._rechain(a, now)
        elif action in ("acknowledged", "resolved", "auto_resolved"):
            self.timers.stop(a.id)
            n = self.outbox.cancel(a.id, now)
            if n:
                self._note(a.id, "notified", f"{n} messages not sent yet were cancelled")
            moved = None
            if a.incident_id is not None:
                moved = self.incidents.refresh(a.incident_id, now)
            changed = moved is not None and moved[0] != moved[1]
            if a.signal == "alarm" and (change.entry.by != RULE or changed or moved is None):
                self.pager.follow_up(a, change.entry.by, now)
            if action != "acknowledged" and a.rule_id in SMOKE_RULES and a.building:
                self._clear_confirmations(a.building, now)

    def _resume_one(self, alert_id: int, now: float) -> None:
        a = self.store.get(alert_id)
        self._raised(a if a.incident_id is not None else self._place(a, now), now)

    def _raised(self, a: Alert, now: float) -> None:
        """What a newly raised alert sets off: correlation (a second detector confirms a fire),
        then its chain. Also for an alert whose raise was committed but never handled (the
        process died in between): correlating again is a rematch at worst, never a second
        alert."""
        for t in self.correlator.on_raised(a, now):
            self._apply(t)
        self._begin(a, now)

    def _place(self, a: Alert, now: float) -> Alert:
        """Put ``a`` into its incident (a new one of its own, or the open one of its key)."""
        incident_id, new = self.incidents.join(a, now)
        if incident_id == a.incident_id:
            return a
        old = a.incident_id
        if new and old is None:  # its own incident, placed by join(): nothing else to update
            return replace(a, incident_id=incident_id)
        placed = self.store.place(a.id, incident_id, f"part of incident {incident_id}").alert
        self.incidents.refresh(incident_id, now)
        if old is not None:
            self.incidents.refresh(old, now)
        return placed

    def _clear_confirmations(self, building: str | None, now: float) -> None:
        """A confirmed fire whose detectors' alarms are all resolved clears (by the rule)."""
        items, _ = self.store.find(
            rule_id=FIRE_CONFIRMED, building=building, open_only=True, limit=500
        )
        for fire in items:
            devices = [d for d in fire.labels.get("devices", "").split(",") if d]
            if any(o.rule_id in SMOKE_RULES for d in devices for o in self.store.open_alerts(d)):
                continue
            self._apply(
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

    def _begin(self, a: Alert, now: float) -> None:
        if not self.router.registry.staff:
            return  # no staff in the registry: alerts are recorded, nobody is paged
        if noise.groupable(a):
            self.timers.start(a.id, "", "grouping", now, now + self.config.group_wait_s)
            return
        chain = self.chains.select(a)
        due = max(now, a.page_at or now)  # a verification window holds the chain back
        if self.timers.start(a.id, chain.id, "chain", due, due) and due <= now:
            timer = self.timers.get(a.id)
            if timer is not None:
                self._run(timer, now)

    def _rechain(self, a: Alert, now: float) -> None:
        """The severity changed: start over on the chain for the new severity, now (a grouped
        trouble raised to an alarm no longer waits; a silence is looked at again)."""
        chain = self.chains.select(a)
        self.timers.stop(a.id)
        self._note(
            a.id, "escalated", f"severity now {a.severity}: chain {chain.id} from the first step"
        )
        if self.timers.start(a.id, chain.id, "chain", now, now):
            timer = self.timers.get(a.id)
            if timer is not None:
                self._run(timer, now)

    def _resume(self) -> None:
        """Firing alerts raised just before a crash, before they were correlated and their timer
        was written."""
        rows = self.db.query(
            "SELECT id FROM alerts a WHERE status = 'firing' AND NOT EXISTS (SELECT 1 FROM"
            " escalations e WHERE e.alert_id = a.id) AND NOT EXISTS (SELECT 1 FROM"
            " alert_history h WHERE h.alert_id = a.id AND h.action IN"
            " ('notified', 'escalated', 'muted'))"
        )
        for r in rows:
            self._guard(self._resume_one, r["id"], self.clock())
        # a confirmed fire whose detectors cleared while the service was down
        self._guard(self._clear_confirmations, None, self.clock())

    # ------------------------------------------------------------------ steps

    def _run(self, t: Timer, now: float) -> None:
        try:
            a = self.store.get(t.alert_id)
        except AlertNotFound:
            self.timers.stop(t.alert_id)
            return
        if a.status != "firing":
            self.timers.stop(a.id)
            return
        if t.state == "grouping":
            if self._group(a, t, now):
                return
            chain = self.chains.select(a)
            with self.db.tx() as db:
                if not Timers.move(db, t, now, state="chain", chain_id=chain.id, due_at=now):
                    return
            t = Timer(t.alert_id, chain.id, "chain", 0, t.started_at, now, None)
        silence = self.silences.muting(a, now)
        if silence is not None:
            with self.db.tx() as db:
                moved = Timers.move(
                    db, t, now, state="muted", muted_by=silence.id, due_at=silence.ends_at
                )
            if moved and t.muted_by != silence.id:
                until = datetime.fromtimestamp(silence.ends_at, self.tz).strftime("%m-%d %H:%M")
                self._note(
                    a.id,
                    "muted",
                    f"muted by silence {silence.id} until {until} "
                    f"({silence.reason}; by {silence.author}): recorded, not sent",
                )
            return
        if t.state == "muted":
            with self.db.tx() as db:
                if not Timers.move(db, t, now, state="chain", muted_by=None, due_at=now):
                    return
            self._note(a.id, "notified", f"silence {t.muted_by} is over: paging now")
            t = Timer(t.alert_id, t.chain_id, "chain", t.step, t.started_at, now, None)
        self.pager.take(a, t, now)

    def _group(self, a: Alert, t: Timer, now: float) -> bool:
        assert a.building is not None
        n = noise.group_size(self.db, a.building, now - self.config.group_window_s)
        if n < self.config.group_threshold:
            return False
        with self.db.tx() as db:
            if not Timers.finish(db, t):
                return True
        change = self._apply(noise.incident(a, n, now))
        ref = f" #{change.alert.id}" if change is not None else ""
        self._note(
            a.id,
            "notified",
            f"not paged on its own: one of {n} devices with trouble "
            f"in building {a.building}, paged as one incident{ref}",
        )
        return True

    def _close_incidents(self, now: float) -> None:
        items, _ = self.store.find(rule_id=noise.BUILDING_TROUBLE, open_only=True, limit=500)
        for inc in items:
            if noise.group_size(self.db, inc.device_id, 0.0) == 0:
                self._apply(noise.incident_clear(inc.device_id, now))

    # ------------------------------------------------------------------ helpers

    def _apply(self, t: Transition) -> AlertChange | None:
        return self.pager.apply(t)

    def _note(self, alert_id: int, action: NoteAction, text: str) -> None:
        self.pager.note(alert_id, action, text)

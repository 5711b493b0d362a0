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

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from alerts import noise
from alerts.correlation import Correlator, synthetic_rules
from alerts.db import Writer, severity_rank, signal_rank
from alerts.escalation import Chains, Timer, Timers, load_chains
from alerts.lifecycle import AlertStore
from alerts.messages import Context, Language, Purpose, render
from alerts.model import SYSTEM, Alert, AlertChange, AlertNotFound, NoteAction
from alerts.notify import Attempt, Delivery, Notifier, Sender, add
from alerts.routing import Router, Target
from alerts.silences import RuleLike, Silences, SyntheticRule
from registry.models import Registry
from rules.matches import Transition

log = logging.getLogger(__name__)

UNREACHABLE = "staff_unreachable"
MAX_NAMED = 12


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
        extra = [SyntheticRule(*r) for r in synthetic_rules()]
        self.silences = Silences(self.db, [*rules, *extra])
        self.gate = noise.FlapGate(config.flap_threshold, config.flap_window_s, clock)
        self.notifier = Notifier(
            self.db,
            config.sender,
            workers=config.workers,
            max_attempts=config.max_attempts,
            backoff_s=config.backoff_s,
            backoff_max_s=config.backoff_max_s,
            clock=clock,
            on_result=self._on_result,
        )
        self._queue: queue.Queue[AlertChange | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._flap_noted: set[int] = set()
        self._unreachable = {a.device_id for a in store.open_alerts() if a.rule_id == UNREACHABLE}
        self._last_sweep = 0.0
        self.handled = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._unsubscribe = self.store.subscribe(self._queue.put)
        self.notifier.start()
        self._thread = threading.Thread(target=self._loop, name="dispatch", daemon=True)
        self._thread.start()
        self._resume()

    def stop(self) -> None:
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
        """Take the steps that are due; release quiet flapping alerts; close building
        incidents whose devices are all back. Returns how many timers were looked at."""
        now = self.clock() if now is None else now
        for t in self.gate.tick(now):
            self._apply(t)
        due = self.timers.due(now)
        for timer in due:
            self._guard(self._run, timer, now)
        if now - self._last_sweep >= 30:
            self._last_sweep = now
            self._guard(self._close_incidents, now)
        return len(due)

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
            log.exception("dispatch: %s failed", getattr(fn, "__name__", fn))

    def _handle(self, change: AlertChange) -> None:
        a, action, now = change.alert, change.action, self.clock()
        if action == "raised":
            for t in self.correlator.on_raised(a, now):
                self._apply(t)
            self._begin(a, now)
        elif action == "rematched":
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
            n = self.notifier.cancel(a.id, now)
            if n:
                self._note(a.id, "notified", f"{n} messages not sent yet were cancelled")
            if a.signal == "alarm":
                self._follow_up(a, change.entry.by, now)

    def _begin(self, a: Alert, now: float) -> None:
        if noise.groupable(a):
            self.timers.start(a.id, "", "grouping", now, now + self.config.group_wait_s)
            return
        chain = self.chains.select(a)
        if self.timers.start(a.id, chain.id, "chain", now, now):
            timer = self.timers.get(a.id)
            if timer is not None:
                self._run(timer, now)

    def _rechain(self, a: Alert, now: float) -> None:
        """The severity changed: start over on the chain for the new severity, now."""
        chain = self.chains.select(a)
        current = self.timers.get(a.id)
        if current is not None and current.state != "chain":
            return
        self.timers.stop(a.id)
        self._note(
            a.id, "escalated", f"severity now {a.severity}: chain {chain.id} from the first step"
        )
        if self.timers.start(a.id, chain.id, "chain", now, now):
            timer = self.timers.get(a.id)
            if timer is not None:
                self._run(timer, now)

    def _resume(self) -> None:
        """Firing alerts raised just before a crash, before their timer was written."""
        rows = self.db.query(
            "SELECT id FROM alerts a WHERE status = 'firing' AND NOT EXISTS (SELECT 1 FROM"
            " escalations e WHERE e.alert_id = a.id) AND NOT EXISTS (SELECT 1 FROM"
            " alert_history h WHERE h.alert_id = a.id AND h.action IN"
            " ('notified', 'escalated', 'muted'))"
        )
        for r in rows:
            self._guard(self._begin, self.store.get(r["id"]), self.clock())

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
        self._steps(a, t, now)

    def _steps(self, a: Alert, t: Timer, now: float) -> None:
        chain = self.chains.get(t.chain_id) or self.chains.select(a)
        n = len(chain.steps)
        for _ in range(n + 1):
            step = chain.step(t.step)
            targets = self.router.resolve(step.to, a, now)
            nxt = chain.due(t.step + 1, t.started_at, max(t.due_at, now))
            if not targets and t.step + 1 < n:
                nxt = now  # nobody on duty for this step: the next one now
            purpose: Purpose = "notify" if t.step == 0 else "escalate" if t.step < n else "repeat"
            msg = render(
                a,
                self.config.language,
                self.config.base_url,
                self.tz,
                Context(purpose, min(t.step, n - 1), n, now - a.raised_at),
            )
            prio = signal_rank(a.signal) * 10 + severity_rank(a.severity)
            with self.db.tx() as db:
                moved = (
                    Timers.finish(db, t)
                    if nxt is None
                    else Timers.move(db, t, now, step=t.step + 1, due_at=nxt)
                )
                if not moved:
                    return  # another poller took this step
                ids = [
                    i
                    for tg in targets
                    for i in add(
                        db,
                        alert_id=a.id,
                        staff_id=tg.staff_id,
                        channels=tg.channels,
                        step=t.step,
                        purpose=purpose,
                        reason=tg.reason,
                        priority=prio,
                        title=msg.title,
                        body=msg.body,
                        now=now,
                    )
                ]
            self._record_step(a, t.step, n, step.to, targets, purpose)
            self.notifier.submit(ids)
            for tg in targets:
                if not tg.channels:
                    self._unreachable_now(
                        tg.staff_id, a, "no notification channel in the registry", now
                    )
            if nxt is None or nxt > now:
                return
            t = Timer(t.alert_id, chain.id, "chain", t.step + 1, t.started_at, nxt, None)

    def _record_step(
        self,
        a: Alert,
        step: int,
        n: int,
        selectors: Sequence[str],
        targets: Sequence[Target],
        purpose: str,
    ) -> None:
        label = f"step {step + 1}/{n}" if step < n else f"repeat {step - n + 1}"
        if not targets:
            text = f"{label}: nobody on duty for {', '.join(selectors)}"
        else:
            named = "; ".join(f"{tg.staff_id} ({tg.reason})" for tg in targets[:MAX_NAMED])
            more = f"; and {len(targets) - MAX_NAMED} more" if len(targets) > MAX_NAMED else ""
            text = f"{label} → {named}{more}"
        self._note(a.id, "notified" if purpose == "notify" else "escalated", text)

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
        items, _ = self.store.list(rule_id=noise.BUILDING_TROUBLE, open_only=True, limit=500)
        for inc in items:
            if noise.group_size(self.db, inc.device_id, 0.0) == 0:
                self._apply(noise.incident_clear(inc.device_id, now))

    # ------------------------------------------------------------------ deliveries

    def _on_result(self, d: Delivery, at: Attempt) -> None:
        """A worker reports an attempt: history, then reachability of the person."""
        how = f"{d.staff_id} via {d.label}"
        if at.outcome == "sent":
            text = f"delivered to {how} ({d.purpose}, attempt {at.number})"
        elif at.outcome == "retrying":
            wait = (at.retry_at or at.at) - at.at
            text = (
                f"delivery to {how} failed: {at.error}; retrying in {wait:.0f} s "
                f"(attempt {at.number}/{self.config.max_attempts})"
            )
        else:
            text = f"delivery to {how} failed for good: {at.error} (attempt {at.number})"
        self._note(d.alert_id, "notified", text)
        if d.purpose == "update" or at.outcome == "retrying":
            return
        now = self.clock()
        if at.outcome == "sent":
            if d.staff_id in self._unreachable:
                self._unreachable.discard(d.staff_id)
                self._apply(_unreachable(d.staff_id, self.config.community, now, "clear"))
            return
        statuses = self.notifier.batch(d.alert_id, d.step, d.staff_id)
        if statuses and all(s == "failed" for s in statuses):
            try:
                a = self.store.get(d.alert_id)
            except AlertNotFound:
                return
            self._unreachable_now(d.staff_id, a, "every channel failed", now)
        step = self.notifier.batch(d.alert_id, d.step)
        if (
            step
            and all(s == "failed" for s in step)
            and self.timers.hasten(d.alert_id, d.step + 1, now)
        ):
            self._note(
                d.alert_id,
                "escalated",
                f"nobody of step {d.step + 1} can be reached: next step now",
            )
            self.poll(now)

    def _unreachable_now(self, staff_id: str, a: Alert, why: str, now: float) -> None:
        self._note(a.id, "notified", f"{staff_id} cannot be reached: {why}")
        if a.rule_id == UNREACHABLE:
            return  # no trouble about the trouble
        self._unreachable.add(staff_id)
        self._apply(_unreachable(staff_id, self.config.community, now, "fire"))

    def _follow_up(self, a: Alert, by: str, now: float) -> None:
        """Tell those who got the alarm that someone acted on it."""
        reached = sorted(
            {
                d.staff_id
                for d in self.notifier.of_alert(a.id)
                if d.status == "sent" and d.purpose != "update"
            }
            - {by}
        )
        reg = self.router.registry.staff
        msg = render(
            a,
            self.config.language,
            self.config.base_url,
            self.tz,
            Context("update", by=by, status=a.status),
        )
        prio = 90
        with self.db.tx() as db:
            ids = [
                i
                for sid in reached
                if sid in reg
                for i in add(
                    db,
                    alert_id=a.id,
                    staff_id=sid,
                    channels=reg[sid].channels,
                    step=-1,
                    purpose="update",
                    reason=f"was paged; {a.status} by {by}",
                    priority=prio,
                    title=msg.title,
                    body=msg.body,
                    now=now,
                )
            ]
        self.notifier.submit(ids)

    # ------------------------------------------------------------------ helpers

    def _apply(self, t: Transition) -> AlertChange | None:
        try:
            return self.store.apply(t)
        except Exception:
            log.exception("dispatch: the store refused %s for %s", t.rule_id, t.device_id)
            return None

    def _note(self, alert_id: int, action: NoteAction, text: str) -> None:
        with contextlib.suppress(AlertNotFound):
            self.store.add_note(alert_id, SYSTEM, text, action)


def _unreachable(staff_id: str, community: str, now: float, action: str) -> Transition:
    return Transition(
        action="fire" if action == "fire" else "clear",
        rule_id=UNREACHABLE,
        device_id=staff_id,
        kind="staff",
        severity="major",
        signal="trouble",
        route="operator",
        at=now,
        summary="A staff member cannot be reached on any channel",
        labels={"community": community, "staff_id": staff_id},
    )

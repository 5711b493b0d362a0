"""Alerting after the lifecycle: the stages, composed once, and the one thread that runs them.

The pipeline (:func:`compose`; each stage is a small object of :mod:`alerts.stages` or
:mod:`alerts.paging` with one interface, ``stage(item) -> item | None``)::

    flap gate (rules worker, before the store: alerts/noise.py)
    raised     place → tell → correlate → start ─┐
    rematched  place → tell → refresh → flap note → start ─┤
    due timer ──────────────────────────────────── firing → group → mute → page → tell
    (tell: a resident's alert in a fire, to those paged about the fire: alerts/fire_residents.py)
    acknowledged / resolved   stop → refresh → follow-up → unconfirm
    delivery result (notify workers) → record (history, reachability; may make a step due)

``start`` passes an item on only when a step is due now; later steps come from the escalation
timers (:class:`alerts.escalation.Timers`, rows in the alert database), so a restart takes them
on time. Whom each step reached and why, and every delivery attempt, go into the alert's
history (``notified``, ``escalated``, ``muted``) through :meth:`AlertStore.add_note`, so they
also reach the live stream.

Thread model. Every stage runs on one thread, ``dispatch``, which takes events from one queue
in order: the store's changes (its subscriber only puts them there, in commit order), the notify
workers' delivery results (they send and write the attempt, then put the result there), and
ticks. :meth:`Dispatcher.poll_soon` (the service's scheduler every second; the API after a
silence ends) asks for a tick taken before the next queued event, so a burst of changes (a
building's power cut) never holds back a fall's page that is due; :meth:`Dispatcher.poll`
(tests, with a fake clock's ``now``) queues one behind what is queued and waits for it. A tick
takes the due steps and, every 30 s, the sweeps (building incidents whose devices are all
back, confirmed fires whose detectors cleared); while the alert database is out of reach it
takes nothing, and says so once (:mod:`alerts.outage`), not at every tick. The notify workers
(:mod:`alerts.notify`) are the only other threads of alerting: they run apprise's blocking
calls and never a stage (the ``duty-coverage`` thread at start only reads the roster). Before
the thread starts,
:meth:`Dispatcher.start` runs the raise's stages for alerts a crash left unhandled, on the
caller's thread. A step is taken by a
compare-and-set on its timer row, so two dispatchers over one database never take it twice.
On PostgreSQL (several instances) due steps and deliveries are also claimed (:mod:`alerts.claims`):
each is worked on by one dispatcher, a dead one's claims are taken over after their claim time
(a step's ``escalation.claim_s``, 5 s; a delivery's ``claim_s``, 30 s), and
every tick adopts the deliveries that no live instance holds (:meth:`Notifier.adopt`).

Adding a stage: write a class with ``__call__(self, item: Item) -> Item | None`` (return the
item, maybe ``dataclasses.replace``-d, to go on; ``None`` to stop), give it what it reads and
writes in its constructor (never another stage), put it in the pipeline it belongs to in
:func:`compose`, and test it alone: build it over an :class:`AlertStore` on a fake clock and
call it with an :class:`Item`. Adding a notification channel: nothing here; a staff member's
channel is an apprise URL (``mailto://``, ``json://``, ``wecombot://`` …); another sender than
apprise implements :class:`alerts.notify.Sender` and is given as ``Config.sender``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from alerts import coverage, noise
from alerts.claims import instance_id
from alerts.config import Config
from alerts.correlation import Correlator, synthetic_rules
from alerts.db import Writer
from alerts.escalation import Chains, Timer, Timers, load_chains
from alerts.fire_residents import FireResidents, TellResidents
from alerts.incidents import Incidents
from alerts.lifecycle import AlertStore
from alerts.model import AlertChange
from alerts.notify import Notifier
from alerts.outage import Outage, database_away
from alerts.outbox import Attempt, Delivery, Outbox
from alerts.paging import FollowUp, Page, Reach, Record, Wording
from alerts.routing import Router
from alerts.silences import RuleLike, Silence, Silences, SyntheticRule
from alerts.stages import (
    Correlate,
    Firing,
    FlapNote,
    Group,
    History,
    Item,
    Mute,
    Pipeline,
    Place,
    Refresh,
    Start,
    Stop,
    Unconfirm,
)
from alerts.throttle import Coalescer
from registry.models import Registry
from rules.transitions import Transition

log = logging.getLogger(__name__)

__all__ = ["Config", "Dispatcher", "Stages", "compose"]

SWEEP_S = 30.0
ORPHANS_EVERY_S = 2.0
ORPHAN_AFTER_S = 5.0
"""Several instances on PostgreSQL: every ``ORPHANS_EVERY_S`` a dispatcher pages the firing
alerts raised over ``ORPHAN_AFTER_S`` ago that no dispatcher has taken up (their instance died
between the rules' commit and its dispatcher's raise stages)."""


@dataclass(frozen=True, slots=True)
class Stages:
    """The pipelines, composed once."""

    on_change: dict[str, Pipeline]
    """By the store change's action; other actions (notes, placements) go nowhere."""
    firing: Firing
    """A due timer's first stage (:meth:`Firing.of` reads its alert)."""
    due: Pipeline
    record: Record
    sweeps: tuple[Callable[[float], None], ...]


def compose(
    store: AlertStore,
    db: Writer,
    config: Config,
    *,
    chains: Chains,
    router: Router,
    correlator: Correlator,
    timers: Timers,
    outbox: Outbox,
    silences: Silences,
    incidents: Incidents,
    submit: Callable[[list[int]], None],
) -> Stages:
    """The one place the stages are built and put in order."""
    tz = ZoneInfo(config.timezone)
    history = History(store)
    reach = Reach(store, history, config.community)
    coalescer = Coalescer(store)
    wording = Wording(config.language, config.base_url, tz)

    place = Place(store, incidents)
    tell = TellResidents(FireResidents(db, router, coalescer, history, wording, submit))
    refresh = Refresh(incidents)
    start = Start(timers, chains, config.group, history, lambda: bool(router.registry.staff))
    firing = Firing(store, timers)
    group = Group(db, chains, config.group, store, history)
    unconfirm = Unconfirm(store, history)
    due = Pipeline(
        group,
        Mute(db, silences, history, tz),
        Page(db, chains, router, coalescer, history, reach, wording, submit),
        tell,
    )
    closed = Pipeline(
        Stop(timers, outbox, history),
        refresh,
        FollowUp(db, outbox, router, coalescer, wording, submit),
        unconfirm,
    )
    return Stages(
        on_change={
            "raised": Pipeline(place, tell, Correlate(correlator, history), start, firing, due),
            "rematched": Pipeline(
                place, tell, refresh, FlapNote(config.flap, history), start, firing, due
            ),
            "acknowledged": closed,
            "resolved": closed,
            "auto_resolved": closed,
        },
        firing=firing,
        due=due,
        record=Record(store, outbox, timers, router, history, reach, config.notify.max_attempts),
        sweeps=(group.sweep, unconfirm.sweep),
    )


@dataclass(frozen=True, slots=True)
class _Result:
    delivery: Delivery
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class _Tick:
    now: float
    done: Future[int]


class _Wake:
    """Put on the queue by :meth:`Dispatcher.poll_soon`: its tick waits apart, taken before the
    next event, so a backlog of changes never holds back a step that is due."""


@dataclass(frozen=True, slots=True)
class _Swap:
    """A new registry, swapped in on the dispatch thread between two events."""

    registry: Registry
    done: threading.Event


_Event = AlertChange | _Result | _Tick | _Wake | _Swap | None


class Dispatcher:
    def __init__(
        self,
        store: AlertStore,
        registry: Registry,
        rules: Iterable[RuleLike],
        config: Config | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        config = config or Config()
        self.store = store
        self.config = config
        self.clock = clock
        self.tz = ZoneInfo(config.timezone)
        self.chains: Chains = load_chains(config.escalation.file)
        self.db = Writer(store.database)
        self.router = Router(registry, self.tz)
        self.correlator = Correlator(registry, store)
        self.instance = config.instance or instance_id()
        self.timers = Timers(self.db, self.instance, config.escalation.claim_s)
        self.outbox = Outbox(self.db)
        self.rules = list(rules)
        extra = [SyntheticRule(*r) for r in synthetic_rules()]
        self.silences = Silences(self.db, [*self.rules, *extra])
        self.incidents = Incidents(self.db)
        self.gate = noise.FlapGate(config.flap.threshold, config.flap.window_s, clock)
        """The flapping gate, run by the rules worker between the engine and the store."""
        self._queue: queue.Queue[_Event] = queue.Queue()
        self._soon: deque[_Tick] = deque()
        self.notifier = Notifier(
            self.db,
            config.sender,
            config.notify,
            clock=clock,
            on_result=lambda d, at: self._queue.put(_Result(d, at)),
            instance=self.instance,
            claim_s=config.claim_s,
        )
        self.stages = compose(
            store,
            self.db,
            config,
            chains=self.chains,
            router=self.router,
            correlator=self.correlator,
            timers=self.timers,
            outbox=self.outbox,
            silences=self.silences,
            incidents=self.incidents,
            submit=self.notifier.submit,
        )
        self._coverage: dict[str, tuple[Registry, list[coverage.Line]]] = {}
        self._coverage_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._last_sweep = 0.0
        self._last_orphans = 0.0
        self.handled = 0
        self.errors = 0
        """Exceptions caught and logged (tests assert there were none)."""
        self.outage = Outage(log)
        """The alert database out of reach: said once when it begins, not at every tick."""
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
        self._resume()
        self._thread = threading.Thread(target=self._loop, name="dispatch", daemon=True)
        self._thread.start()

    def _coverage_of(
        self, community: str, registry: Registry, week_of: datetime | None
    ) -> list[coverage.Line]:
        if week_of is not None:
            return coverage.check(registry, self.chains, self.tz, self.rules, week_of=week_of)
        with self._coverage_lock:
            cached = self._coverage.get(community)
            if cached is None or cached[0] is not registry:
                lines = coverage.check(registry, self.chains, self.tz, self.rules)
                cached = self._coverage[community] = (registry, lines)
            return cached[1]

    def coverage(
        self, week_of: datetime | None = None, community: str | None = None
    ) -> list[coverage.Line]:
        """Who would be paged first, per chain and place, across a week (see
        :mod:`alerts.coverage`). The roster is weekly: this week's answer is kept until the
        registry changes. Several communities: each within its own registry (``community``:
        that one's lines only)."""
        parts = self.router.registry.parts
        chosen = list(parts) if community is None else [community]
        return [line for c in chosen for line in self._coverage_of(c, parts[c], week_of)]

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
        # the notify workers first: results of sends in flight are still recorded (history,
        # reachability) by the dispatch thread, which runs until they are in
        self.notifier.stop()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None
        while True:  # ticks put after the last event: answered, not taken
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, _Tick):
                event.done.set_result(0)
            elif isinstance(event, _Swap):
                event.done.set()
            self._queue.task_done()
        while self._soon:
            self._soon.popleft().done.set_result(0)
        self.db.close()

    def set_registry(self, registry: Registry, timeout: float = 30.0) -> bool:
        """Route, page and correlate with ``registry`` from the next event on: swapped on the
        dispatch thread between two events, so an alert being routed or paged keeps the roster
        it started with. Returns once swapped (False: not within ``timeout``; it still will be,
        in its turn)."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            self._swap(registry)
            return True
        swap = _Swap(registry, threading.Event())
        self._queue.put(swap)
        return swap.done.wait(timeout)

    def _swap(self, registry: Registry) -> None:
        self.router.registry = registry
        self.correlator.registry = registry

    def filter(self, transitions: Sequence[Transition]) -> list[Transition]:
        """The flapping gate, between the rule engine and the store (any thread)."""
        return self.gate.filter(transitions)

    @property
    def alive(self) -> bool:
        """False when the dispatch thread should run and does not (health says so)."""
        return self._stopped or self._thread is None or self._thread.is_alive()

    def poll_soon(self, now: float | None = None) -> None:
        """Have the due steps taken before the next queued event, without waiting (the
        service's scheduler every second; the API after a silence ends)."""
        if self._stopped:
            return
        now = self.clock() if now is None else now
        if self._thread is None or threading.current_thread() is self._thread:
            self._tick(now)
            return
        self._soon.append(_Tick(now, Future()))
        self._queue.put(_Wake())

    def poll(self, now: float | None = None) -> int:
        """Take the steps that are due (and, every 30 s, the sweeps) on the dispatch thread,
        after what is queued before; returns how many timers were due."""
        if self._stopped:
            return 0
        now = self.clock() if now is None else now
        if self._thread is None or threading.current_thread() is self._thread:
            return self._tick(now)  # not started (tests of one part), or from a stage
        done: Future[int] = Future()
        self._queue.put(_Tick(now, done))
        return done.result(timeout=60)

    def expire_silence(self, silence_id: int, by: str) -> Silence:
        """End a silence now; what it held back and is still firing is paged at once."""
        now = self.clock()
        silence, ended = self.silences.expire(silence_id, by, now)
        if ended and self.timers.release(silence_id, now):
            self.poll_soon(now)
        return silence

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """For tests: every queued event handled and the outbox empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0 and self.notifier.idle():
                return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------------ the dispatch thread

    def _loop(self) -> None:
        while True:
            event = self._queue.get()
            try:
                while self._soon:  # due steps before the next change, however many wait
                    self._guard(self._answer, self._soon.popleft())
                if event is None:
                    return
                if isinstance(event, _Tick):
                    self._guard(self._answer, event)
                elif isinstance(event, _Result):
                    self._guard(self._recorded, event)
                elif isinstance(event, AlertChange):
                    self._guard(self._changed, event)
                    self.handled += 1
                elif isinstance(event, _Swap):
                    self._guard(self._swap, event.registry)
                    event.done.set()
            finally:
                self._queue.task_done()

    def _answer(self, tick: _Tick) -> None:
        n = 0
        try:
            n = self._tick(tick.now)
        finally:
            tick.done.set_result(n)

    def _guard(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception as e:
            name = getattr(fn, "__name__", fn)
            reason = database_away(e)
            if reason is not None:  # no bug: said once per outage (alerts/outage.py)
                self.outage.failed(f"{name}", reason)
                return
            self.errors += 1
            log.exception("dispatch: %s failed", name)

    def _changed(self, change: AlertChange) -> None:
        pipeline = self.stages.on_change.get(change.action)
        if pipeline is not None:
            pipeline(Item(alert=change.alert, now=self.clock(), change=change))

    def _recorded(self, r: _Result) -> None:
        now = self.clock()
        if self.stages.record(r.delivery, r.attempt, now):
            self._tick(now)

    def _tick(self, now: float) -> int:
        try:
            due = self.timers.due(now)
        except Exception as e:  # the next tick asks again
            reason = database_away(e)
            if reason is not None:  # the rest of the tick would meet it too: the next one
                self.outage.failed("reading the due steps", reason)
                return 0
            self.errors += 1
            log.exception("dispatch: reading the due steps failed")
            due = []
        else:
            self.outage.answered()
        for timer in due:
            self._guard(self._due, timer, now)
        self._guard(self.notifier.adopt, now)
        if (
            self.notifier.claiming
            and now - self._last_orphans >= ORPHANS_EVERY_S
            and self.router.registry.staff  # (without staff no alert ever gets a timer)
        ):
            # several instances: an alert committed by an instance that died before its
            # dispatcher took it up (the raise reaches only the committing process's
            # subscribers) is paged by whichever instance looks first, once it is overdue
            self._last_orphans = now
            self._guard(self._page_unpaged, now - ORPHAN_AFTER_S)
        if now - self._last_sweep >= SWEEP_S:
            self._last_sweep = now
            for sweep in self.stages.sweeps:
                self._guard(sweep, now)
        return len(due)

    def _due(self, timer: Timer, now: float) -> None:
        try:
            item = self.stages.firing.of(timer, now)
            if item is not None:
                self.stages.due(item)
        except Exception:
            with contextlib.suppress(Exception):  # the next poll takes it, not after claim_s
                self.timers.unclaim(timer)
            raise

    def _resume(self) -> None:
        """Before the thread starts: firing alerts raised just before a crash, before they were
        correlated and their timer was written, go through the raise's stages as if raised now
        (correlating again is a rematch at worst); then the confirmed fires whose detectors
        cleared while the service was down."""
        self._page_unpaged(None)
        for sweep in self.stages.sweeps[1:]:
            self._guard(sweep, self.clock())

    def _page_unpaged(self, raised_before: float | None) -> int:
        """Firing alerts that no stage has taken up (no timer, never notified, escalated or
        muted) go through the raise's stages now; ``raised_before``: only those raised before
        then. Timers are unique per alert, so of two dispatchers doing this for one alert, one
        pages. Returns how many were found."""
        rows = self.db.query(
            "SELECT id FROM alerts a WHERE status = 'firing' AND NOT EXISTS (SELECT 1 FROM"
            " escalations e WHERE e.alert_id = a.id) AND NOT EXISTS (SELECT 1 FROM"
            " alert_history h WHERE h.alert_id = a.id AND h.action IN"
            " ('notified', 'escalated', 'muted'))"
            + ("" if raised_before is None else " AND raised_at < ?"),
            () if raised_before is None else (raised_before,),
        )
        if rows and raised_before is not None:
            log.warning(
                "dispatch: %d firing alerts raised by another instance that never paged them"
                " (it stopped, or is far behind): paging them now",
                len(rows),
            )
        raised = self.stages.on_change["raised"]
        for r in rows:
            self._guard(lambda i: raised(Item(self.store.get(i), self.clock())), r["id"])
        return len(rows)

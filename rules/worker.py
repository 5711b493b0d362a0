"""The rules worker: a follower of the journal whose cursor commits with the alert changes it made.

Ingestion only decodes, commits and acknowledges. This worker reads the committed journal rows
after its cursor (woken by each ingest commit, so a fall is evaluated milliseconds after it is
journaled), evaluates them, and hands the resulting alert transitions, the devices' presence
changes, its new cursor and the rule state of every device the batch touched to the alert
store's :meth:`apply_batch`, which commits them in ONE transaction. Hence:

- a crash anywhere re-evaluates from the committed cursor, with the engine's state as it was at
  that cursor: no alert lost, none doubled (the Kafka Streams / Debezium way: the offset is
  committed with the effect);
- a store error (locked, full, read-only) rolls all of it back; the worker throws its in-memory
  state away, loads the committed one again and retries from the same cursor after a pause. It
  is never only logged: health says so until a commit succeeds again;
- rule state (episodes under way, count windows, absence timers, the flapping gate) survives a
  restart exactly, because it is saved with the cursor it belongs to. Saving is per device and
  only for devices the batch touched: a batch of N distinct devices writes N small rows.

A batch that changes no alert and no presence (most of them: telemetry at rest) need not be
committed at once: the worker's thread holds its evaluation, up to ``hold_s`` seconds or
``hold_rows`` rows, and commits the state and cursor of several batches in one transaction
(each commit of the alert store is an fsync: ~200 µs, which a live stream's small batches paid
again and again). What a crash leaves is still a cursor with the state it belongs to, only an
older one: the held rows are evaluated again after a restart, with the same state, to the same
(empty) effects. A batch with a transition or a presence change commits at once, together with
whatever was held before it; so does every :meth:`tick`.

Rows are evaluated by :class:`rules.replay.FastRows`: the transitions and state
``engine.evaluate`` gives each row's reading, without building a reading for the rows that
move no rule (most telemetry); ``fast=False`` keeps the straightforward path, and
tests/unit/test_rules_worker_fast.py runs both over the same journal. Rule state is saved as
JSON encoded by msgspec.

Time-driven changes (an absence timer running out, a count window closing, a flapping alert
going quiet) come from :meth:`RulesWorker.tick` on the same thread, committed the same way.

The worker knows the alert store and the flapping gate only by the small protocols below, so
``rules`` imports nothing from ``alerts``; the service wires them together.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec
import psycopg

from base.sql import Db
from district.leases import Lease, LeaseLost
from district.live import Listener
from district.partitions import partition_of
from ingest import rows
from ingest.journal_pg import URGENT_CHANNEL
from ingest.payloads import Reading
from registry.models import Registry
from rules.baselines import Baselines
from rules.engine import RuleEngine
from rules.metrics import RULES_BEHIND, RULES_COMMITS, RULES_FAILING, RULES_RETRIES
from rules.replay import FastRows
from rules.sources import PgRows, RowSource, SqliteRows
from rules.transitions import Transition

log = logging.getLogger(__name__)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rule_cursor (
    name    TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rule_state (
    device_id TEXT PRIMARY KEY,
    state     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flap_state (
    fingerprint TEXT PRIMARY KEY,
    state       TEXT NOT NULL
);
"""
"""The worker's tables, in the alert database (so they commit with the alerts)."""

Presence = tuple[str, bool, float]
"""(device_id, offline, event time)."""


class TransitionStore(Protocol):
    """What the worker needs of the alert store."""

    def connection(self) -> AbstractContextManager[Db]:
        """A connection to the store's database (the worker loads its state on it)."""
        ...

    def apply_batch(
        self,
        transitions: Sequence[Transition],
        presence: Sequence[Presence] = (),
        within: Callable[[Db], None] | None = None,
    ) -> Sequence[object]: ...


class Gate(Protocol):
    """What the worker needs of the flapping gate (:class:`alerts.noise.FlapGate`)."""

    def filter(self, transitions: Iterable[Transition]) -> list[Transition]: ...
    def tick(self, now: float | None = None) -> list[Transition]: ...
    def take_dirty(self) -> set[str]: ...
    def export(self, fingerprint: str) -> dict[str, Any] | None: ...
    def load(self, states: Iterable[tuple[str, dict[str, Any]]]) -> None: ...


class Leases(Protocol):
    """What the worker needs of a :class:`district.leases.LeaseKeeper` of device partitions."""

    instance_id: str
    count: int

    def owned(self) -> dict[int, Lease]: ...


UNEVALUATED_GRACE_S = 5.0
"""How long a partition may be held by this instance's lease keeper and refused by its rules
worker before :meth:`RulesWorker.health` reports it (:attr:`WorkerHealth.unevaluated`)."""


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    position: int
    """The last journal id whose evaluation is committed."""
    behind: int
    """Journal rows committed but not evaluated yet."""
    oldest_s: float | None
    """Age (receive time) of the oldest row not evaluated yet."""
    failing: str | None
    """Why the last commit failed, while it keeps failing."""
    failing_since: float | None
    unevaluated: tuple[int, ...] = ()
    """Partitions this instance's lease keeper has held for ``UNEVALUATED_GRACE_S`` or more
    that its rules worker refuses (their leases lapsed under it and were not taken again under
    a new epoch): they are not evaluated here. Empty unless something is wrong."""


class RulesWorker:
    name = "rules"

    def __init__(
        self,
        journal: Path | RowSource,
        store: TransitionStore,
        make_engine: Callable[[], RuleEngine],
        *,
        community: str,
        gate: Gate | None = None,
        batch_rows: int = 2000,
        tick_s: float = 1.0,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        baselines: Callable[[float], Baselines] | None = None,
        baselines_every_s: float = 3600.0,
        fast: bool = True,
        hold_s: float = 0.05,
        hold_rows: int = 20_000,
        leases: Leases | None = None,
        gather_s: float = 0.01,
        urgent_ahead: bool = True,
    ) -> None:
        self.source: RowSource = SqliteRows(journal) if isinstance(journal, Path) else journal
        """Where the rows come from and the cursor is kept (rules/sources.py): the SQLite
        journal file, or the PostgreSQL journal's follower over a set of partitions."""
        if isinstance(self.source, PgRows):
            # a fall is evaluated as its transaction commits, not once every older
            # transaction in the cluster has (rules/sources.py); False: in log order only
            self.source.ahead = urgent_ahead
        self.store = store
        self.make_engine = make_engine
        self.community = community
        self.gate = gate
        self.batch_rows = batch_rows
        self.tick_s = tick_s
        self.retry_s = retry_s
        self.clock = clock
        self.engine = make_engine()
        self.fast = fast
        """Evaluate rows with :class:`~rules.replay.FastRows` (False: build every reading;
        the same transitions and state, kept for the tests that compare the two)."""
        self._rows: FastRows | _Readings | None = None
        self.hold_s = hold_s
        self.hold_rows = hold_rows
        """How long, and for how many rows, the worker's thread may hold the commit of batches
        without effects (0: commit every batch, as :meth:`step` does by default)."""
        self._held: tuple[int, float] | None = None
        """Evaluated but not committed yet: (rows, monotonic time of the first)."""
        self.evaluated = 0
        """Readings evaluated and committed since start."""
        self._failing: tuple[str, float] | None = None
        self._lag: tuple[int, float | None] = (0, None)
        self._stale = False
        """The engine holds state that was never committed (a commit failed): reload first."""
        self._wake = threading.Event()
        self.gather_s = gather_s
        """While telemetry streams in (:meth:`committed` without urgent rows), the worker
        steps at most every ``gather_s`` instead of at every ingest commit: see :meth:`nudge`."""
        self._pending = False
        """Rows were committed since the worker last looked (:meth:`nudge`)."""
        self._idle = False
        """The worker waits for rows (a wake-up needed), not gathering them."""
        self._streaming = False
        """The last step read rows: more are likely on their way (gathered ``gather_s``)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: Listener | None = None
        """On PostgreSQL: woken by every instance's urgent writes (``URGENT_CHANNEL``)."""
        self._next_tick = 0.0
        self.compute_baselines = baselines
        """Personal baselines as of a time (a few SQL reads of the rollups): computed at
        start, then every ``baselines_every_s`` on a thread of its own and swapped in by
        :meth:`tick` on the engine's thread. Derived from the journal, so never saved."""
        self.baselines: Baselines | None = None
        self.baselines_every_s = baselines_every_s
        self._baselines_next = 0.0
        self._fresh: Baselines | None = None
        self._computing: threading.Thread | None = None
        self._registry_next: tuple[Registry, threading.Event] | None = None
        """A registry to swap in on the worker's thread (:meth:`set_registry`)."""
        self.leases = leases
        """Several instances: the device partitions this worker evaluates are the ones it
        holds by lease (``source`` must be a :class:`PgRows`); None: every partition."""
        self._leased: dict[int, Lease] = (
            {} if leases is None or not isinstance(self.source, PgRows) else self._fenced()
        )
        """The leases the source reads (and fences its commits) under."""
        self._refused: set[Lease] = set()
        """Leases a commit found lost, or released: not evaluated again under that epoch."""
        self._unevaluated_since: dict[int, float] = {}
        """Partitions seen held by the keeper and refused here, from when (:meth:`health`)."""
        self._health_lock = threading.Lock()
        self._releasing: tuple[list[int], threading.Event] | None = None
        self.load()

    # ------------------------------------------------------------------ state

    def load(self) -> None:
        """(Re)build the engine and the gate from what is committed: the cursor, each device's
        rule state and the flapping gate. Called at start and after a failed commit."""
        engine = self.make_engine()
        with self.store.connection() as db:
            if isinstance(db, sqlite3.Connection):  # PostgreSQL's: district/migrations
                db.executescript(SCHEMA)
            self.source.load(db)
            position = self.source.position
            mine = self._mine()
            states = [
                (d, json.loads(s)) for d, s in db.execute("SELECT * FROM rule_state") if mine(d)
            ]
            flaps = [
                (f, json.loads(s))
                for f, s in db.execute("SELECT * FROM flap_state")
                if mine(f.split(":", 1)[-1])
            ]
            fresh = not states and position == 0
            opened = (
                []
                if not fresh
                else [
                    r
                    for r in db.execute(
                        "SELECT rule_id, device_id, started_at FROM alerts"
                        " WHERE status != 'resolved'"
                    ).fetchall()
                    if mine(r[1])
                ]
            )
        engine.load_state(states)
        for rule_id, device_id, since in opened:
            # a store written before the worker kept rule state: open alerts that clear by
            # themselves pick up their state, as before
            engine.restore(rule_id, device_id, since)
        engine.take_dirty()
        if self.compute_baselines is not None and self.baselines is None:
            try:
                self.refresh_baselines()
            except Exception:  # never keeps the rules from starting: retried by the tick
                log.exception("rules worker: computing the personal baselines failed")
        engine.set_baselines(self.baselines)
        if self.gate is not None:
            self.gate.load(flaps)
        self.engine = engine
        self._held = None

    @property
    def position(self) -> int:
        """The last journal id whose evaluation is committed (rules/sources.py)."""
        return self.source.position

    # ------------------------------------------------------------------ leases

    def _fenced(self) -> dict[int, Lease]:
        src = self.source
        return dict(src.fence[1]) if isinstance(src, PgRows) and src.fence is not None else {}

    def _mine(self) -> Callable[[str], bool]:
        """Whether a device is evaluated here: every device, or those of the leased partitions
        (rule state is per device: the state of the others is never loaded)."""
        leases = self.leases
        if leases is None:
            return lambda _device: True
        held, count = set(self._leased), leases.count
        return lambda device: partition_of(device, count) in held

    @property
    def partitions(self) -> list[int] | None:
        """The partitions evaluated here (None: every one, no leases)."""
        return None if self.leases is None else sorted(self._leased)

    def follow_leases(self) -> bool:
        """On the worker's thread, between batches: when the leases held changed, commit what
        is held for the old set (when it is all still held), read over the new set and load
        the committed rule state of its devices. True when the set changed."""
        leases = self.leases
        src = self.source
        if leases is None or not isinstance(src, PgRows):
            return False
        held = {n: lease for n, lease in leases.owned().items() if lease not in self._refused}
        if held == self._leased:
            return False
        if not self._stale and self._held is not None and self._leased.items() <= held.items():
            self.flush()  # only gained: the pending evaluation still commits
        # (lapsed ones: evaluated again from the committed cursors by their next holder)
        gained = sorted(held.keys() - self._leased.keys())
        lost = sorted(self._leased.keys() - held.keys())
        log.info("rules worker: partitions held %d (gained %s, lost %s)", len(held), gained, lost)
        src.close()
        self.source = PgRows(
            src.url, held, src.name, fence=(leases.instance_id, held), ahead=src.ahead
        )
        self._leased = held
        self.load()
        self._stale = False
        return True

    def release(self, numbers: list[int], timeout: float = 5.0) -> None:
        """``LeaseKeeper.before_release``: commit what is held (state and cursors) before the
        keeper gives ``numbers`` up, then stop evaluating them. Runs on the worker's thread
        (waits up to ``timeout`` for it: a worker stuck in a commit is fenced off instead)."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            self._release(numbers)
            return
        done = threading.Event()
        self._releasing = (numbers, done)
        self._wake.set()
        if not done.wait(timeout):
            log.warning("rules worker: releasing %s before its commit", numbers)

    def _take_release(self) -> None:
        pending, self._releasing = self._releasing, None
        if pending is not None:
            try:
                self._release(pending[0])
            finally:
                pending[1].set()

    def _release(self, numbers: list[int]) -> None:
        src = self.source
        if not self._stale and self._held is not None and isinstance(src, PgRows):
            # the keeper's transaction, waiting on this, holds every lease row of this
            # instance (it renewed them): no one can take them before this commits, and
            # fencing would wait on that very transaction
            src.unfenced = True
            try:
                self.flush()
            finally:
                src.unfenced = False
        self._refused.update(self._leased[n] for n in numbers if n in self._leased)
        self.follow_leases()

    def _lost(self, e: LeaseLost) -> None:
        """A commit was refused by the fence: roll back to what is committed, and drop the
        partitions found lost (their new holder evaluates them from the committed cursors)."""
        log.warning("rules worker: %s; dropping them", e)
        self._refused.update(self._leased[n] for n in e.numbers if n in self._leased)
        self._stale = True
        self._held = None

    # ------------------------------------------------------------------ work

    def step(self, *, hold: bool = False) -> bool:
        """Evaluate and commit one batch of journal rows; True when there may be more.
        ``hold``: a batch without effects is committed later (:meth:`flush`), with the next
        batch that has effects, or once held ``hold_s`` or ``hold_rows``."""
        held = self._held
        batch, more = self.source.read(self.batch_rows)
        self._streaming = bool(batch)
        if not batch:
            return False
        evaluate = self._evaluator().evaluate
        transitions: list[Transition] = []
        presence: list[Presence] = []
        for row in batch:
            transitions.extend(evaluate(row))
            if row[3] == "status" and row[7] in ("online", "offline"):
                presence.append((row[1], row[7] == "offline", row[4]))
        n = len(batch)
        now = time.monotonic()
        self._held = (n, now) if held is None else (held[0] + n, held[1])
        if hold and not (transitions or presence) and not self._flush_due(now):
            return more
        self._commit(transitions, presence)
        return more

    def _flush_due(self, now: float) -> bool:
        held = self._held
        return held is not None and (held[0] >= self.hold_rows or now - held[1] >= self.hold_s)

    def flush(self) -> None:
        """Commit what is held (the state and cursor of evaluated batches without effects)."""
        if self._held is not None:
            self._commit([], [])

    def _evaluator(self) -> FastRows | _Readings:
        """What evaluates rows against the current engine: :class:`FastRows` (the same
        transitions and state as the engine's ``evaluate`` on each row's reading, without
        building most of them), or with ``fast=False`` the straightforward way."""
        ev = self._rows
        if ev is None or ev.engine is not self.engine:
            ev = self._rows = (FastRows if self.fast else _Readings)(self.engine, self.community)
        return ev

    def tick(self, now: float | None = None) -> None:
        """Time-driven changes as of ``now``, committed with the state they changed."""
        now = self.clock() if now is None else now
        self._swap_baselines(now)
        RULES_BEHIND.set(self.source.lag()[0])
        transitions = self.engine.tick(now)
        if self.gate is not None:
            transitions = self.gate.filter(transitions) + self.gate.tick(now)
            self._commit(transitions, [], filtered=True)
        else:
            self._commit(transitions, [])

    def refresh_baselines(self, now: float | None = None) -> None:
        """Compute the baselines now, in the calling thread, and use them (start, tests)."""
        if self.compute_baselines is None:
            return
        now = self.clock() if now is None else now
        self.baselines = self.compute_baselines(now)
        self._baselines_next = now + self.baselines_every_s
        self.engine.set_baselines(self.baselines)

    def _swap_baselines(self, now: float) -> None:
        """Use baselines computed on the side; start the next computation when due."""
        fresh, self._fresh = self._fresh, None
        if fresh is not None:
            self.baselines = fresh
            self.engine.set_baselines(fresh)
        compute = self.compute_baselines
        if compute is None or now < self._baselines_next:
            return
        if self._computing is not None and self._computing.is_alive():
            return
        self._baselines_next = now + self.baselines_every_s

        def run() -> None:
            try:
                self._fresh = compute(now)
            except Exception:
                log.exception("rules worker: computing the personal baselines failed")

        self._computing = threading.Thread(target=run, name="baselines", daemon=True)
        self._computing.start()

    def run_until_idle(self) -> None:
        """Catch up in the calling thread (tests, the benchmark), holding commits as the
        worker's thread does; everything evaluated is committed when it returns."""
        while self.step(hold=self.hold_s > 0):
            pass
        self.flush()

    def _commit(
        self,
        transitions: list[Transition],
        presence: list[Presence],
        *,
        filtered: bool = False,
    ) -> None:
        gate = self.gate
        if gate is not None and not filtered:
            transitions = gate.filter(transitions)
        engine = self.engine
        states = [(d, engine.export_state(d)) for d in engine.take_dirty()]
        flaps = [(f, gate.export(f)) for f in gate.take_dirty()] if gate is not None else []
        source = self.source
        if not (transitions or presence or states or flaps or source.dirty):
            return

        def within(db: Db) -> None:
            _save(db, "rule_state", "device_id", states)
            _save(db, "flap_state", "fingerprint", flaps)
            source.save(db)

        self.store.apply_batch(transitions, presence, within)
        source.saved()
        self.evaluated += 0 if self._held is None else self._held[0]
        self._held = None
        RULES_COMMITS.inc()

    # ------------------------------------------------------------------ thread

    def wake(self) -> None:
        """New rows are committed that are to be evaluated at once (an event, a status)."""
        self._wake.set()

    def urgent(self) -> None:
        """Urgent rows (an event, a status) are committed, here or (PostgreSQL) by another
        instance: evaluated at once, on PostgreSQL without waiting for the horizon."""
        src = self.source
        if isinstance(src, PgRows):
            src.urgent = True  # (before the wake-up: the step it wakes looks for them)
        self._wake.set()

    def nudge(self) -> None:
        """New telemetry rows are committed: evaluated within ``gather_s``. The worker's thread
        is woken only when it waits for rows; while rows stream in (its last step read some,
        or some were committed during it) it steps every ``gather_s`` and reads what was
        committed meanwhile, rather than being woken (and reading) at every ingest commit.
        ``python -m bench.followers --batch 20`` (20 readings a commit, 20,000 a second; four
        runs each, one after the other on a shared machine): the rules thread's CPU 5.0 µs a
        row woken at every commit (``--wake``), 3.6 gathering."""
        self._pending = True
        if self._idle:  # (set before ``_pending`` is read there: one of the two sees the other)
            self._idle = False
            self._wake.set()

    def committed(self, readings: Sequence[Reading]) -> None:
        """The ingest pipeline's downstream: ``readings`` (each with its ``stream``) are
        committed. Events and statuses (a fall, an alarm, a device going offline) wake the
        worker at once; telemetry alone :meth:`nudge`s it."""
        for r in readings:
            if r.stream != "telemetry":
                self.urgent()
                return
        self.nudge()

    def set_registry(self, registry: Registry, timeout: float = 30.0) -> bool:
        """Have the engine use ``registry`` from the next batch on: swapped on the worker's
        thread between two batches (a reading is never evaluated half with one registry), the
        cursor untouched. Returns once swapped (False: not within ``timeout``, it still will
        be before the next batch)."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            self.engine.set_registry(registry)
            self._rows = None  # rows looked up anew (FastRows also notices a new registry)
            return True
        done = threading.Event()
        self._registry_next = (registry, done)
        self._wake.set()
        return done.wait(timeout)

    def _take_registry(self) -> None:
        pending, self._registry_next = self._registry_next, None
        if pending is not None:
            self.engine.set_registry(pending[0])
            self._rows = None
            pending[1].set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="rules", daemon=True)
        self._thread.start()
        src = self.source
        if isinstance(src, PgRows) and src.ahead:
            # a fall another instance journaled for a partition held here: read at once, not
            # at this instance's next commit or tick (up to tick_s when it ingests nothing)
            self._listener = Listener(
                src.url,
                self._heard,
                on_reconnect=self.urgent,
                channel=URGENT_CHANNEL,
                name="jiayuan-rules-wake",
            )
            try:
                self._listener.start(timeout=5.0)
            except TimeoutError:  # the listener goes on trying; the tick reads meanwhile
                log.warning("rules worker: not woken by other instances' falls yet")

    def _heard(self, event: dict[str, Any]) -> None:
        """An urgent write committed (any instance): wake when it is of a partition held here."""
        parts = event.get("partitions")
        if self.leases is None or not isinstance(parts, list) or set(parts) & set(self._leased):
            self.urgent()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        elif self._thread is None:  # used from this thread
            self.source.close()

    def health(self, *, lag: bool = True) -> WorkerHealth:
        """How far behind the journal's head the committed evaluation is (any thread).
        ``lag`` False, or the journal not answering: the last known backlog."""
        position = self.position
        behind, oldest = self._lag
        if lag:
            try:
                behind, oldest = self._lag = self.source.lag()
            except Exception as e:  # the database away: health says so, never raises
                log.debug("rules worker: backlog unknown: %s", e)
        RULES_BEHIND.set(behind)
        failing = self._failing
        unevaluated = self._unevaluated()
        return WorkerHealth(
            position,
            behind,
            None if oldest is None else max(0.0, time.time() - oldest),
            None if failing is None else failing[0],
            None if failing is None else failing[1],
            unevaluated,
        )

    def _unevaluated(self) -> tuple[int, ...]:
        """Partitions the keeper has held and this worker refused for ``UNEVALUATED_GRACE_S``
        or longer. Shorter is ordinary: leases given up to balance are refused here just
        before the keeper's transaction that releases them commits."""
        if self.leases is None:
            return ()
        now = self.clock()
        refused = self._refused
        now_refused = [n for n, lease in self.leases.owned().items() if lease in refused]
        with self._health_lock:
            since = self._unevaluated_since = {
                n: self._unevaluated_since.get(n, now) for n in now_refused
            }
        return tuple(sorted(n for n, t in since.items() if now - t >= UNEVALUATED_GRACE_S))

    def _main(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self._pending = False
            try:
                self._take_release()
                if not self.follow_leases() and self._stale:
                    self.load()
                self._stale = False
                self._take_registry()
                busy = self.step(hold=self.hold_s > 0)
                if self._flush_due(time.monotonic()):
                    self.flush()
                if time.monotonic() >= self._next_tick:
                    self._next_tick = time.monotonic() + self.tick_s
                    self.tick()
            except LeaseLost as e:
                self._lost(e)
                continue
            except Exception as e:
                self._failed(e)
                continue
            if self._failing is not None:
                log.warning(
                    "rules worker: committing again after %.0f s; evaluation resumed at"
                    " journal row %d",
                    time.time() - self._failing[1],
                    self.position,
                )
                self._failing = None
                RULES_FAILING.set(0)
            if not busy:
                now = time.monotonic()
                until = min(self.tick_s, self._next_tick - now)
                if self._held is not None:
                    until = min(until, self._held[1] + self.hold_s - now)
                self._idle = True
                if self._pending or self._streaming:  # rows flow: gather them
                    self._idle = False
                    until = min(until, self.gather_s)
                self._wake.wait(max(0.0, until))
                self._idle = False
        if self._held is not None and not self._stale:
            try:  # (else evaluated again after the restart: the same state, the same effects)
                self.flush()
            except Exception as e:
                log.warning("rules worker: the last evaluation was not committed at stop: %s", e)
        self.source.close()

    def _failed(self, e: Exception) -> None:
        """Roll back to what is committed and try again after a pause; log once per outage."""
        RULES_RETRIES.inc()
        reason = f"{type(e).__name__}: {e}"[:200]
        if self._failing is None:
            self._failing = (reason, time.time())
            RULES_FAILING.set(1)
            log.error(
                "rules worker: the alert store refused a commit (%s); holding the cursor at"
                " journal row %d and retrying every %.0f s",
                reason,
                self.position,
                self.retry_s,
                exc_info=not isinstance(e, sqlite3.OperationalError | psycopg.OperationalError),
            )
        self._stale = True
        self.source.close()
        self._stop.wait(self.retry_s)


class _Readings:
    """Rows evaluated the straightforward way: each as its reading, by the engine."""

    def __init__(self, engine: RuleEngine, community: str) -> None:
        self.engine = engine
        self.community = community

    def evaluate(self, row: rows.Row) -> list[Transition]:
        return self.engine.evaluate(rows.to_reading(row, self.community))


_encode: Final = msgspec.json.Encoder().encode
"""States as compact JSON (what ``json.dumps`` gives, several times faster; a state holds no
NaN or infinity: the edge refuses them and the engine saves "never" as null)."""


def _save(db: Db, table: str, key: str, items: list[tuple[str, dict[str, Any] | None]]) -> None:
    gone = [(k,) for k, v in items if v is None]
    kept = [(k, _encode(v).decode()) for k, v in items if v is not None]
    if gone:
        db.executemany(f"DELETE FROM {table} WHERE {key} = ?", gone)
    if kept:
        db.executemany(
            f"INSERT INTO {table} ({key}, state) VALUES (?, ?)"
            f" ON CONFLICT ({key}) DO UPDATE SET state = excluded.state",
            kept,
        )

"""Telemetry ingest in OS processes of its own (by default one: ``JIAYUAN_INGEST_SEPARATE``;
K with ``JIAYUAN_INGEST_PROCESSES`` = K > 1), and the supervisor that makes sure nothing is
stranded when one of them stops.

One Python process holds the GIL for nearly all of its ingest work (paho's loop, decode, the
journal's rows), so it uses about one core. One child process (the default), or K > 1 of
them, each run one telemetry MQTT session — MQTT 5, QoS 1, persistent, acknowledged after
the journal commit:
:class:`ingest.listener.Session`, :class:`ingest.pipeline.Pipeline` and
:class:`ingest.journal.Journal` as the single process uses them — as members of one shared
subscription (``$share/jiayuan-ingest/<filter>``), so the broker hands each message to one of
them. They write the same SQLite journal (WAL; SQLite serialises their write transactions,
the busy timeout makes a writer wait its turn). The main process keeps the urgent session, the
HTTP push, the rules worker, the rollups, the sink and the API: with one child, the rules
worker and the rollups no longer take their CPU from the GIL of the process that reads
(a backlog drains 1.6-1.7 times as fast: README, "The bench's own load").

Nothing stranded: on Mosquitto a member's persistent session keeps its share of the messages,
and its unacknowledged in-flight ones, until that same session is resumed (docs/district.md,
"Shared subscriptions: measured on Mosquitto"). So each process has a fixed identity — process
``i`` of K connects as :func:`jiayuan.broker.accounts.telemetry_user` (the service's own
account and client id for the first, ``<account>-t<i>`` for the others) — and the supervisor
restarts a process that died with that same identity: it resumes the session and gets the
queued share and the unacknowledged messages again (the journal drops what it had stored).

The channel: one pipe per child. The child sends ``("commit", n, at)`` after each commit that
stored new readings (the main process wakes its rules worker), and a :class:`Report` every
:data:`REPORT_S` and whenever its session comes up or goes down (health, counters, the ids of
its threads for CPU by stage). The parent sends ``("registry", registry)`` at each registry
change and ``("stop",)``; a child whose parent is gone (end of file on the pipe) stops too.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from setproctitle import setproctitle

from base import procstat
from base.files import write_file
from base.heap import freeze_startup_heap
from base.retry import Backoff
from ingest.metrics import (
    DEAD_LETTERS,
    DEADLOCK_RETRIES,
    DUPLICATES,
    JOURNAL_REFUSED,
    JOURNAL_WRITE_FAILURES,
    MESSAGES,
    PARTITION_RETRIES,
    PARTITIONS_MADE,
    PIPELINE_ERRORS,
    PTS_FALLBACKS,
    STAGE_CPU,
)
from ingest.pipeline import StoreHealth
from ingest.threadcpu import label
from jiayuan.broker.accounts import telemetry_user
from jiayuan.logmetrics import LOG_ERRORS
from registry import Registry

if TYPE_CHECKING:
    from jiayuan.settings import Settings

log = logging.getLogger(__name__)

REPORT_S: Final = 0.5
"""How often a child reports (and so how stale the aggregated health may be)."""
REPORT_GAP_S: Final = 0.05
"""The least time between two reports. A child reports after each commit too (the counts in
``/healthz`` current), and flat out it commits ~100 times a second: one report for the commits
of 50 ms rather than one each (built, pickled, read and applied in the main process) took the
bench's "other" CPU from 1.1-1.4 µs a message to 0.9-1.1 (16 runs before, 4 after, 2026-12-05);
the counts in ``/healthz`` are at most 50 ms behind a commit."""
RESTART = Backoff(first_s=0.5, max_s=30.0)
"""Pauses before restarting a child that keeps dying soon after its start."""
STEADY_S: Final = 30.0
"""A child that ran this long before dying is restarted at once (its failures forgotten)."""
DRAINED_S: Final = 2.0
"""A retiring process's session counts as drained after this long with nothing received."""
STOP_S: Final = 20.0
"""How long a child has to finish its batch and disconnect before it is killed."""

FORWARDED: Final[tuple[Counter, ...]] = (
    MESSAGES,
    DEAD_LETTERS,
    DUPLICATES,
    PIPELINE_ERRORS,
    JOURNAL_WRITE_FAILURES,
    JOURNAL_REFUSED,
    STAGE_CPU,
    LOG_ERRORS,
    PARTITIONS_MADE,
    PTS_FALLBACKS,
    PARTITION_RETRIES,
    DEADLOCK_RETRIES,
)
"""The children's counters added into the main process's own (so ``/metrics`` and the error
counters the tests read cover every process): the increments, at each report."""

WAKE_DELAY = Histogram(
    "jiayuan_ingest_wake_seconds",
    "From an ingest process's commit to the main process waking its rules worker",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
RESTARTS = Counter(
    "jiayuan_ingest_process_restarts_total", "Telemetry ingest processes restarted after dying"
)

CounterKey = tuple[int, tuple[tuple[str, str], ...]]
"""A forwarded counter's sample: its place in :data:`FORWARDED`, its labels."""


def identity(settings: Settings, index: int) -> tuple[str, str | None]:
    """Client id and broker account of telemetry process ``index`` (1-based)."""
    user = settings.mqtt_username
    return (
        telemetry_user(settings.mqtt_client_id, index),
        None if user is None else telemetry_user(user, index),
    )


@dataclass(frozen=True, slots=True)
class Report:
    """What a child tells the main process about itself."""

    pid: int
    up: bool
    """Its telemetry session is connected and subscribed."""
    session_present: bool | None
    store: StoreHealth
    oldest_unacked_s: float | None
    committed: int
    queued: int
    counters: dict[CounterKey, float]
    threads: dict[int, str]
    """Native thread id → :func:`ingest.threadcpu.label`, for CPU by stage."""


@dataclass(frozen=True)
class ChildSpec:
    index: int
    count: int
    settings: Settings
    registry: Registry
    retiring: bool = False
    """A process above the K configured now: it resumes its session only to drain what is
    queued for it, leaves the shared subscription and ends the session."""
    client_id: str | None = None
    """A session slot's (jiayuan/slots.py): client id and account given, not numbered."""
    username: str | None = None


STATE_FILE: Final = "ingest_processes"
"""In the data directory: the K the service last ran with and has not yet retired the
sessions above."""


def previous_count(data_dir: Path) -> int:
    """The K of the last run whose sessions above the current K may still hold messages."""
    try:
        return max(1, int((data_dir / STATE_FILE).read_text().strip()))
    except (OSError, ValueError):
        return 1


def record_count(data_dir: Path, count: int) -> None:
    write_file(data_dir / STATE_FILE, f"{count}\n", 0o644)


# ---------------------------------------------------------------------------- the child


def _counters() -> dict[CounterKey, float]:
    out: dict[CounterKey, float] = {}
    for i, c in enumerate(FORWARDED):
        for family in c.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[i, tuple(sorted(s.labels.items()))] = s.value
    return out


def title(spec: ChildSpec) -> str:
    """The process's name in ``ps`` and ``top``, in the words ``/healthz`` uses (without it,
    multiprocessing's command line: ``python -c from multiprocessing.spawn import …``)."""
    if spec.client_id is not None:
        return f"jiayuan: ingest, telemetry slot {spec.index}"
    if spec.retiring:
        return f"jiayuan: ingest process {spec.index} (draining)"
    return f"jiayuan: ingest process {spec.index} of {spec.count}"


def child_main(spec: ChildSpec, conn: Connection) -> None:
    """A telemetry ingest process: its session, pipeline and journal connection, until told
    to stop (``("stop",)``, SIGTERM, SIGINT, or its parent gone)."""
    setproctitle(title(spec))
    if spec.settings.ingest_nice:  # the main process first when the CPU is short
        os.nice(spec.settings.ingest_nice)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    settings = spec.settings
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [ingest "
        + (
            f"{spec.index}{' draining' if spec.retiring else f'/{spec.count}'}"
            if spec.client_id is None
            else f"slot {spec.index} {spec.client_id}"
        )
        + "]: %(message)s",
    )
    from base.datadir import DataDir
    from ingest.access import BrokerAccess
    from ingest.inbox import Inbox
    from ingest.journal import Journal
    from ingest.journal_store import JournalStore
    from ingest.listener import TELEMETRY, Inbound, Session, shared
    from ingest.mqtt_client import install_lean_publish_properties
    from ingest.payloads import Reading
    from ingest.pipeline import Pipeline
    from ingest.profiles import load_profiles
    from ingest.topics import SUBSCRIPTION, TELEMETRY_SUBSCRIPTIONS
    from ingest.ways import WaysIn
    from jiayuan.logmetrics import count_errors

    count_errors()
    sending = threading.Lock()

    def send(msg: object) -> None:
        with sending:
            try:
                conn.send(msg)
            except OSError:  # the parent is gone: stop
                stop.set()

    report_now = threading.Event()
    client_id, username = (
        (spec.client_id, spec.username)
        if spec.client_id is not None
        else identity(settings, spec.index)
    )
    access = BrokerAccess(
        username,
        settings.mqtt_password.get_secret_value() or None,
        tls=settings.mqtt_tls,
        ca_file=settings.mqtt_tls_ca,
    )
    profiles = load_profiles(settings.profile_files(), settings.community)
    # the telemetry vendor profiles' topics (``urgent: false``) read by one process alone, as
    # the urgent ones by urgent slot 0 (jiayuan/slots.py VENDOR_SLOT: order and ``trigger:
    # change`` edges need one reader): telemetry slot 0, or ingest process 1 of K
    vendor = profiles.filters(urgent=False)
    native = TELEMETRY_SUBSCRIPTIONS + vendor
    reads_vendor = spec.index == (0 if spec.client_id is not None else 1)
    mine = shared(TELEMETRY_SUBSCRIPTIONS) + (vendor if reads_vendor else ())
    install_lean_publish_properties()
    inbox = Inbox()
    session = Session(
        TELEMETRY,
        settings.mqtt_host,
        settings.mqtt_port,
        client_id,
        access,
        () if spec.retiring else mine,
        inbox.put_many,
        report_now.set,
        session_expiry_s=settings.mqtt_session_expiry_s,
        receive_maximum=settings.mqtt_receive_maximum,
        keepalive=30,
        # a session that was the single process's: its own subscriptions go, its queue stays;
        # a retiring one leaves the shared subscription and is drained
        retire=(
            shared(native) + vendor
            if spec.retiring
            else tuple(f for f in (SUBSCRIPTION, *native, *shared(vendor)) if f not in mine)
        ),
    )
    journal: JournalStore
    url = settings.database()
    if url is not None:  # session slots (jiayuan/slots.py): the instances' shared journal
        from ingest.journal_pg import PgJournal

        journal = PgJournal(url, name=f"jiayuan-ingest-slot-{spec.index}")
    else:
        journal = Journal(
            DataDir(settings.data_dir).journal,
            synchronous=settings.journal_synchronous,
            max_pages=settings.journal_max_pages,
        )
    ways = WaysIn(spec.registry)
    profiles.place_by(ways.community_of)

    def committed(new: Sequence[Reading]) -> None:
        send(("commit", len(new), time.time()))
        report_now.set()  # the counts in /healthz current within REPORT_GAP_S of a commit

    def ack(messages: Iterable[Inbound]) -> None:
        session.ack([m.mid for m in messages if m.qos == 1])

    pipeline = Pipeline(
        inbox,
        journal,
        ack,
        committed,
        batch_max=settings.batch_max,
        batch_wait=settings.batch_wait_ms / 1000.0,
        profiles=profiles,
        ways=ways,
    )

    def report() -> Report:
        return Report(
            pid=os.getpid(),
            up=session.up.is_set(),
            session_present=session.session_present,
            store=pipeline.store_health(),
            oldest_unacked_s=pipeline.oldest_unacked_age(time.time()),
            committed=pipeline.committed,
            queued=inbox.qsize(),
            counters=_counters(),
            threads={
                t.native_id: label(t.name) for t in threading.enumerate() if t.native_id is not None
            },
        )

    def reporter() -> None:
        while not stop.is_set():
            report_now.wait(REPORT_S)
            report_now.clear()
            send(("report", report()))
            stop.wait(REPORT_GAP_S)  # the commits meanwhile make one report after it

    def commands() -> None:
        try:
            while not stop.is_set():
                if not conn.poll(0.2):
                    continue
                msg = conn.recv()
                if msg[0] == "stop":
                    stop.set()
                elif msg[0] == "registry":
                    ways.set_registry(msg[1])
        except (EOFError, OSError):  # the parent is gone
            stop.set()

    pipeline.start()
    session.start()
    log.info(
        "%s: startup heap kept out of full garbage collections: %d objects",
        title(spec).removeprefix("jiayuan: "),
        freeze_startup_heap(),
    )
    threading.Thread(target=reporter, name="ingest-report", daemon=True).start()
    threading.Thread(target=commands, name="ingest-commands", daemon=True).start()
    idle_since: float | None = None
    while not stop.wait(0.5 if spec.retiring else 1.0):
        if not spec.retiring or not session.up.is_set():
            continue
        # retiring: drained once nothing has come or waited for DRAINED_S
        if inbox.qsize() or pipeline.oldest_unacked_age(time.time()) is not None:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= DRAINED_S:
            pipeline.stop()
            session.end()
            journal.close()
            log.info(
                "session %s drained (%d messages) and ended: this process is no longer one of"
                " the %d",
                username or client_id,
                pipeline.committed,
                spec.count,
            )
            send(("retired", spec.index))
            conn.close()
            return
    # as the single process stops: the batch in hand committed and acknowledged, then the
    # session disconnected (kept by the broker, with whatever is still unacknowledged)
    pipeline.stop()
    session.stop()
    journal.close()
    send(("report", report()))
    conn.close()
    log.info(
        "stopped: batch in hand committed and acknowledged, session %s kept by the broker",
        username or client_id,
    )


# ---------------------------------------------------------------------------- the parent


@dataclass
class _Slot:
    index: int
    retiring: bool = False
    retired: bool = False
    """Retiring, and its session drained and ended: not restarted."""
    proc: BaseProcess | None = None
    conn: Connection | None = None
    report: Report | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    dead: bool = False
    """It died, and its restarted process has not connected yet."""
    committed_before: int = 0
    """Committed by the slot's earlier processes."""
    counters: dict[CounterKey, float] = field(default_factory=dict)
    """The current process's counters as last added in."""
    ident: tuple[str, str | None] | None = None
    """A session slot's client id and account (:meth:`IngestProcesses.add`)."""
    leaving: bool = False
    """Being stopped for good (:meth:`IngestProcesses.remove`): not restarted."""

    def name(self, count: int) -> str:
        """What the log calls it: ``ingest process i of K``, ``session slot i's process``
        (several instances, jiayuan/slots.py), or one draining a larger K's session."""
        if self.ident is not None:
            return f"session slot {self.index}'s process"
        if self.retiring:
            return f"ingest process {self.index} (draining the session of a larger K)"
        return f"ingest process {self.index} of {count}"


@dataclass(frozen=True)
class ProcessesHealth:
    """The children's health, aggregated for ``/healthz``."""

    down: list[int]
    """Processes (1-based) not running, or restarted and not yet connected."""
    disconnected: list[int]
    """Running, their telemetry session not connected."""
    store: StoreHealth
    oldest_unacked_s: float | None
    committed: int
    queued: int
    processes: list[dict[str, Any]]
    supervised: bool
    """The supervisor thread runs (no restart without it)."""


class IngestProcesses:
    """K telemetry ingest processes, supervised: started with :meth:`start`, each restarted
    with the same identity when it dies, stopped cleanly with :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        wake: Callable[[], None],
        count: int,
        *,
        apart: bool = True,
        retiring: Iterable[int] = (),
        retired: Callable[[], None] = lambda: None,
    ) -> None:
        """``count`` processes (none with 1 unless ``apart``: the main process reads
        telemetry), and ``retiring``: processes of a larger K run before, each resumed once to
        drain its session and end it; ``retired`` is called when they all have."""
        self.settings = settings
        self.count = count
        self._registry = registry
        self._wake = wake
        self._retired = retired
        self._ctx = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i) for i in range(1 if apart else 2, count + 1)]
        self._slots += [_Slot(i, retiring=True) for i in retiring]
        self._lock = threading.Lock()
        self._stopping = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="ingest-procs", daemon=True)
        self._collector = _CpuCollector(self)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for slot in self._slots:
            self._spawn(slot)
        self._thread.start()
        REGISTRY.register(self._collector)

    def stop(self) -> None:
        """Each child finishes its batch, acknowledges it and disconnects (the broker keeps its
        session); one that does not within :data:`STOP_S` is killed (what it had not
        acknowledged comes again to its session)."""
        with self._lock:
            self._stopping = True
            running = [s for s in self._slots if s.proc is not None]
        for s in running:
            self._send(s, ("stop",))
        # the supervisor thread reaps them (the one thread that waits for children: two
        # threads waiting for one child race, and the loser takes it for still running)
        self._until_reaped(running, STOP_S)
        with self._lock:
            for s in running:
                if s.proc is not None and s.proc.exitcode is None:
                    log.error("%s did not stop: killed", s.name(self.count))
                    s.proc.kill()
        self._until_reaped(running, 5.0)
        self._done.set()
        self._thread.join(5)
        REGISTRY.unregister(self._collector)

    def _until_reaped(self, slots: list[_Slot], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(s.proc is not None for s in slots) and time.monotonic() < deadline:
            if not self._thread.is_alive():
                return
            time.sleep(0.05)

    def set_registry(self, registry: Registry) -> None:
        """The registry-change hook: each child checks ways in against ``registry``."""
        with self._lock:
            self._registry = registry
            slots = list(self._slots)
        for s in slots:
            self._send(s, ("registry", registry))

    def _send(self, slot: _Slot, msg: object) -> None:
        conn = slot.conn
        if conn is None:
            return
        with contextlib.suppress(OSError):  # dead: restarted with the current registry
            conn.send(msg)

    def _spawn(self, slot: _Slot) -> None:
        with self._lock:
            if self._stopping:
                return
            mine, theirs = self._ctx.Pipe()
            spec = ChildSpec(
                slot.index,
                self.count,
                self.settings,
                self._registry,
                retiring=slot.retiring,
                client_id=None if slot.ident is None else slot.ident[0],
                username=None if slot.ident is None else slot.ident[1],
            )
            proc = self._ctx.Process(
                target=child_main,
                args=(spec, theirs),
                name=f"jiayuan-ingest-{slot.index}",
                daemon=True,
            )
            proc.start()
            theirs.close()
            slot.proc, slot.conn, slot.report = proc, mine, None
            slot.counters = {}
            slot.started, slot.restart_at = time.monotonic(), None
        client_id, username = (
            identity(self.settings, slot.index) if slot.ident is None else slot.ident
        )
        log.info(
            "%s started (pid %s, session %s)",
            slot.name(self.count),
            proc.pid,
            username or client_id,  # with an account the broker names the session by it
        )

    # ------------------------------------------------------------------ session slots

    def add(self, key: int, client_id: str, username: str | None) -> None:
        """Start a process for session slot ``key`` (jiayuan/slots.py): the session of
        ``client_id``/``username``, resumed; supervised and restarted like the others until
        :meth:`remove`."""
        slot = _Slot(key, ident=(client_id, username))
        with self._lock:
            if any(s.index == key and s.ident is not None for s in self._slots):
                return
            self._slots.append(slot)
        self._spawn(slot)

    def remove(self, keys: Iterable[int], timeout: float = STOP_S) -> None:
        """Stop the processes of session slots ``keys`` as :meth:`stop` stops each (its batch
        committed and acknowledged, the session disconnected and kept by the broker), killing
        those still running after ``timeout`` (0: at once); returns once they have exited."""
        keys = set(keys)
        with self._lock:
            found = [s for s in self._slots if s.index in keys and s.ident is not None]
            for s in found:
                s.leaving = True
        for s in found:
            self._send(s, ("stop",))
        self._until_reaped(found, timeout)
        with self._lock:
            for s in found:
                if s.proc is not None and s.proc.exitcode is None:
                    if timeout > 0:
                        log.warning("session slot %d's process did not stop in time", s.index)
                    log.warning("session slot %d's process killed", s.index)
                    s.proc.kill()
        self._until_reaped(found, 5.0)
        with self._lock:
            self._slots = [s for s in self._slots if s not in found]

    def held(self) -> list[int]:
        """The session slots with a process."""
        with self._lock:
            return sorted(s.index for s in self._slots if s.ident is not None)

    # ------------------------------------------------------------------ supervision

    def _supervise(self) -> None:
        while not self._done.is_set():
            try:
                self._round()
            except Exception:  # a bug: said, and the supervision goes on
                log.exception("supervising the ingest processes failed; going on")
                time.sleep(0.2)

    @property
    def supervising(self) -> bool:
        """Whether the supervisor thread runs (for health)."""
        return self._thread.is_alive()

    def _round(self) -> None:
        """One round: read what the children said, notice deaths, restart those due."""
        with self._lock:
            slots = list(self._slots)
        by_conn = {s.conn: s for s in slots if s.conn is not None}
        by_sentinel = {s.proc.sentinel: s for s in slots if s.proc is not None}
        waiting: list[Any] = [*by_conn, *by_sentinel]
        ready = wait(waiting, timeout=0.2) if waiting else []
        if not waiting:  # every one dead, waiting for its restart
            time.sleep(0.05)
        for r in ready:
            if r in by_conn:
                self._read(by_conn[r])
        for r in ready:
            if r in by_sentinel:
                self._died(by_sentinel[r])
        now = time.monotonic()
        for s in slots:
            if s.leaving:
                continue
            if s.proc is None and s.restart_at is not None and now >= s.restart_at:
                RESTARTS.inc()
                self._spawn(s)

    def _read(self, slot: _Slot) -> None:
        conn = slot.conn
        assert conn is not None
        try:
            while conn.poll():
                self._handle(slot, conn.recv())
        except (EOFError, OSError):
            slot.conn = None  # its sentinel says when it is gone
            conn.close()

    def _handle(self, slot: _Slot, msg: Any) -> None:
        if msg[0] == "commit":
            self._wake()
            WAKE_DELAY.observe(max(0.0, time.time() - msg[2]))
            return
        if msg[0] == "retired":
            slot.retired = True
            if all(s.retired for s in self._slots if s.retiring):
                self._retired()
            return
        report: Report = msg[1]
        for key, value in report.counters.items():
            delta = value - slot.counters.get(key, 0.0)
            if delta > 0:
                _add(key, delta)
        slot.counters = dict(report.counters)
        if report.up and slot.dead:
            slot.dead = False
            log.warning(
                "%s is back: its session %s",
                slot.name(self.count),
                "resumed" if report.session_present else "new (the broker had not kept it)",
            )
        slot.report = report

    def _died(self, slot: _Slot) -> None:
        proc = slot.proc
        assert proc is not None
        if slot.conn is not None:
            self._read(slot)  # its last words
        slot.committed_before += slot.report.committed if slot.report is not None else 0
        with self._lock:  # reaped under the lock :meth:`stop` kills under
            proc.join(1)
            slot.proc, slot.conn, slot.report = None, None, None
            stopping = self._stopping or slot.retired or slot.leaving
            slot.dead = not stopping
        if stopping:
            return
        ran = time.monotonic() - slot.started
        slot.failures = 1 if ran >= STEADY_S else slot.failures + 1
        pause = 0.0 if slot.failures == 1 else RESTART.delay(slot.failures - 1)
        slot.restart_at = time.monotonic() + pause
        log.error(
            "%s exited (%s) after %.0f s; restarting it in %.1f s with the"
            " same session, which holds its share of the messages meanwhile",
            slot.name(self.count),
            _exit(proc.exitcode),
            ran,
            pause,
        )

    # ------------------------------------------------------------------ health

    def health(self, now: float) -> ProcessesHealth:
        down: list[int] = []
        disconnected: list[int] = []
        store = StoreHealth(ok=True)
        oldest: float | None = None
        committed = queued = 0
        processes: list[dict[str, Any]] = []
        for s in list(self._slots):
            r, proc = s.report, s.proc
            alive = proc is not None  # None from its death, the supervisor's to notice
            committed += s.committed_before + (r.committed if r is not None else 0)
            if s.retired:
                pass
            elif s.dead or not alive:
                down.append(s.index)
            elif r is None or not r.up:
                disconnected.append(s.index)
            if r is not None:
                queued += r.queued
                if not r.store.ok and store.ok:
                    store = r.store
                if r.oldest_unacked_s is not None:
                    oldest = max(oldest or 0.0, r.oldest_unacked_s)
            processes.append(
                {
                    "process": s.index,
                    "slot": None if s.ident is None else s.index,
                    "client_id": None if s.ident is None else s.ident[0],
                    "pid": None if proc is None else proc.pid,
                    "running": alive,
                    "retiring": s.retiring,
                    "retired": s.retired,
                    "connected": bool(r is not None and r.up),
                    "committed": s.committed_before + (r.committed if r is not None else 0),
                }
            )
        return ProcessesHealth(
            down, disconnected, store, oldest, committed, queued, processes, self.supervising
        )

    def pids(self) -> list[tuple[int, int, dict[int, str]]]:
        """(index, pid, thread ids → labels) of the running children."""
        out = []
        for s in list(self._slots):
            proc, r = s.proc, s.report
            if proc is not None and proc.pid is not None and r is not None:
                out.append((s.index, proc.pid, r.threads))
        return out


def _add(key: CounterKey, delta: float) -> None:
    i, labels = key
    c = FORWARDED[i]
    (c.labels(**dict(labels)) if labels else c).inc(delta)


def _exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class _CpuCollector(Collector):
    """CPU of the children, whole and by thread (as ``jiayuan_thread_cpu_seconds`` labels
    them), read from ``/proc`` at each scrape: the benchmark's stages summed over processes."""

    def __init__(self, procs: IngestProcesses) -> None:
        self._procs = procs

    def describe(self) -> list[CounterMetricFamily]:
        return []

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "jiayuan_ingest_process_cpu_seconds",
            "CPU time (user + system) of each telemetry ingest process, whole (thread"
            " 'process') and by thread",
            labels=["process", "thread"],
        )
        for index, pid, threads in self._procs.pids():
            whole = procstat.cpu_seconds(pid)
            if whole is None:
                continue
            family.add_metric([str(index), "process"], whole)
            by: dict[str, float] = {}
            for tid, name in threads.items():
                seconds = procstat.cpu_seconds(Path(f"/proc/{pid}/task/{tid}/stat"))
                if seconds is not None:
                    by[name] = by.get(name, 0.0) + seconds
            for name, seconds in sorted(by.items()):
                family.add_metric([str(index), name], seconds)
        yield family

"""Followers of the journal: workers that read the ``readings`` table in id order from a cursor
kept in the journal itself, each in its own thread with its own SQLite connections, so that
ingestion never waits for them and they never touch the ingest thread's connection.

Ids only grow (one writer; a batch's ids are assigned in its transaction and visible only once
it commits), so "every row after my cursor" misses nothing and sees nothing twice. Two
:class:`Follower` subclasses: the rollups (:mod:`ingest.rollups`, cursor moved in the same
transaction as the aggregates it wrote) and the InfluxDB sink (:mod:`ingest.influx`, cursor
moved only after the server accepted the batch). The class holds what they share: the thread,
the connection (opened again after an error), the cursor, the wake-up on commit, the stop,
and the retry with base.retry's backoff. Retention (:meth:`ingest.journal.Journal.prune`)
keeps every row a running follower has not passed yet.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

from base import sqlite
from base.retry import Backoff
from ingest import rowcodec

log = logging.getLogger(__name__)

CURSOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    name    TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    updated REAL NOT NULL
);
"""


ERROR_BACKOFF = Backoff(first_s=1.0, max_s=30.0, jitter=0.5)
"""After a step failed: 1 s, 2 s, 4 s … up to 30 s while it keeps failing."""


class WriteLock:
    """A lock on one journal file's write transactions, for this process's threads and across
    the processes that write it (``JIAYUAN_INGEST_PROCESSES``): a :class:`threading.Lock`,
    then an exclusive ``flock`` on ``<journal>-writelock`` beside the file, which the kernel
    hands to a waiting process the moment the holder lets it go."""

    def __init__(self, path: Path) -> None:
        self._thread_lock = threading.Lock()
        self._path = path.with_name(path.name + "-writelock")
        self._fd: int | None = None

    def __enter__(self) -> WriteLock:
        self._thread_lock.acquire()
        try:
            if self._fd is None:
                self._fd = self._open()
            if self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            if self._fd is not None and self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _open(self) -> int:
        """The lock file's descriptor, closed when this lock is no longer used (a test's
        journal, done with); -1 (this process's threads only, SQLite's busy handler between
        processes) where it cannot be made: a read-only data directory, whose journal takes no
        writes anyway."""
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            log.warning("journal write lock file %s: %s; in-process lock only", self._path, e)
            return -1
        weakref.finalize(self, os.close, fd)
        return fd


_WRITE_LOCKS: weakref.WeakValueDictionary[Path, WriteLock] = weakref.WeakValueDictionary()
"""The lock of each journal file some writer holds (its journal, rollups, sink): one per file
at a time, forgotten (and its descriptor closed) when no writer holds it any more."""
_WRITE_LOCKS_GUARD = threading.Lock()


def write_lock(path: Path) -> WriteLock:
    """The lock every writer of one journal file holds around its write transaction: the
    ingest batch, the followers' cursors and rollups, retention — in this process and in the
    telemetry ingest processes.

    SQLite would serialise them anyway, but a writer that finds the file locked sleeps in its
    busy handler in steps of up to 100 ms; measured here, a rollup batch holding the lock made
    the ingest commit (and so the PUBACKs and every alert behind them) wait hundreds of
    milliseconds; beside two ingest processes journaling as fast as they could, a one-reading
    commit (a fall's) took 237 ms at the 99th percentile with the busy handler alone, 70 ms
    with this lock (``python -m bench.journal_writers``). It hands over the moment the other
    writer commits."""
    key = path.resolve()
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(key)
        if lock is None:
            lock = _WRITE_LOCKS[key] = WriteLock(key)
        return lock


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection of a follower's own. ``synchronous=NORMAL`` is enough: a cursor lost to a
    power cut only moves back (rollups roll back with it; the sink writes a batch again, which
    InfluxDB stores once — same series, same time)."""
    return rowcodec.register(sqlite.connect(path, synchronous="NORMAL", query_only=readonly))


def load_cursor(db: sqlite3.Connection, name: str) -> int:
    db.execute(
        "INSERT OR IGNORE INTO cursors (name, last_id, updated) VALUES (?, 0, ?)",
        (name, time.time()),
    )
    return int(db.execute("SELECT last_id FROM cursors WHERE name = ?", (name,)).fetchone()[0])


def save_cursor(db: sqlite3.Connection, name: str, last_id: int) -> None:
    """Within the caller's transaction when there is one (hold :func:`write_lock`)."""
    db.execute(
        "UPDATE cursors SET last_id = ?, updated = ? WHERE name = ?", (last_id, time.time(), name)
    )


def head(db: sqlite3.Connection) -> int:
    """The newest journal row's id (0 for an empty journal)."""
    return int(db.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()[0])


def oldest_after(db: sqlite3.Connection, last_id: int) -> float | None:
    """Receive time of the first row after ``last_id``, None when there is none."""
    row = db.execute(
        "SELECT received FROM readings WHERE id > ? ORDER BY id LIMIT 1", (last_id,)
    ).fetchone()
    return None if row is None else float(row[0])


class Retry(Exception):
    """What :meth:`Follower.step` raises when something outside the journal is away (a server
    down, throttling): the follower waits by its backoff, at least ``after_s``, and takes the
    step again from its cursor. Expected, so no traceback; the journal connection is kept."""

    def __init__(self, reason: str, after_s: float | None = None) -> None:
        super().__init__(reason)
        self.after_s = after_s


class Follower:
    """One thread that calls :meth:`step` while it reports more to do, then rests ``idle_s``
    or until :meth:`wake` (an ingest commit). A step that fails is taken again after
    ``backoff`` (base.retry's policy: the delay doubles with each failure in a row): after a
    :class:`Retry` with the same connection, after any other exception (logged) with a new one.
    While resting, idle or backing off, :meth:`tick` runs at least every ``tick_s``.

    The cursor is the subclass's to move (in the step's own transaction, or once the effect
    elsewhere is accepted); :attr:`position` is what it last committed."""

    name = "follower"

    def __init__(
        self,
        path: Path,
        *,
        idle_s: float = 1.0,
        tick_s: float = 1.0,
        backoff: Backoff = ERROR_BACKOFF,
    ) -> None:
        self.path = path
        self.idle_s = idle_s
        self.tick_s = tick_s
        self.backoff = backoff
        self.position = 0
        """The last journal id done (committed): retention keeps everything after it."""
        self.failures = 0
        """Steps failed in a row (0 once one succeeds)."""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"journal-{self.name}", daemon=True)

    def open(self) -> sqlite3.Connection:
        """Connect, create this follower's tables and load its cursor into ``position``."""
        db = connect(self.path)
        db.executescript(CURSOR_SCHEMA)
        self.position = load_cursor(db, self.name)
        return db

    def step(self, db: sqlite3.Connection) -> bool:
        """Do one bounded piece of work; True when there may be more right away."""
        raise NotImplementedError

    def tick(self, db: sqlite3.Connection) -> None:
        """Between steps, at least every ``tick_s`` (health, gauges, timers); nothing by default."""

    def wake(self) -> None:
        """New rows are committed: step now rather than after ``idle_s``."""
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the step in hand (its cursor is committed or it is taken again next time)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_until_idle(self) -> None:
        """Catch up in the calling thread (tests, the benchmark, a one-off backfill)."""
        db = self.open()
        try:
            while self.step(db):
                pass
        finally:
            db.close()

    def _main(self) -> None:
        db: sqlite3.Connection | None = None
        while not self._stop.is_set():
            retry_after: float | None = None
            try:
                if db is None:
                    db = self.open()
                self._wake.clear()
                busy = self.step(db)
                self.failures = 0
            except Retry as e:
                self.failures += 1
                retry_after = e.after_s
                busy = False
            except Exception:
                log.exception("journal follower %s failed; retrying", self.name)
                self.failures += 1
                if db is not None:
                    db.close()
                    db = None
                busy = False
            if busy:
                continue
            if self.failures:
                self._rest(db, self.retry_delay(retry_after), wakeable=False)
            else:
                self._rest(db, self.idle_s, wakeable=True)
        if db is not None:
            db.close()

    def retry_delay(self, at_least_s: float | None = None) -> float:
        """The pause before a failed step is taken again: the backoff after ``failures`` in a
        row, or what the other side asked for (``Retry.after_s``) when that is longer."""
        return max(self.backoff.delay(self.failures), at_least_s or 0.0)

    def _rest(self, db: sqlite3.Connection | None, seconds: float, *, wakeable: bool) -> None:
        """Wait ``seconds`` (less if woken, when ``wakeable``), ticking every ``tick_s``."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            if db is not None:
                try:
                    self.tick(db)
                except Exception:
                    log.exception("journal follower %s: tick failed", self.name)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            event = self._wake if wakeable else self._stop
            if event.wait(min(left, self.tick_s)):
                return

"""Followers of the journal: workers that read the ``readings`` table in id order from a cursor
kept in the journal itself, each in its own thread with its own SQLite connections, so that
ingestion never waits for them and they never touch the ingest thread's connection.

Ids only grow (one writer; a batch's ids are assigned in its transaction and visible only once
it commits), so "every row after my cursor" misses nothing and sees nothing twice. Two
followers: the rollups (:mod:`ingest.rollups`, cursor moved in the same transaction as the
aggregates it wrote) and the InfluxDB sink (:mod:`ingest.influx`, cursor moved only after the
server accepted the batch). Retention (:meth:`ingest.journal.Journal.prune`) keeps every row a
running follower has not passed yet.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from base import sqlite

log = logging.getLogger(__name__)

CURSOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    name    TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    updated REAL NOT NULL
);
"""


_WRITE_LOCKS: dict[Path, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def write_lock(path: Path) -> threading.Lock:
    """The lock every writer of one journal file in this process holds around its write
    transaction: the ingest batch, the followers' cursors and rollups, retention.

    SQLite would serialise them anyway, but a writer that finds the file locked sleeps in its
    busy handler in steps of up to 100 ms; measured here, a rollup batch holding the lock made
    the ingest commit (and so the PUBACKs and every alert behind them) wait hundreds of
    milliseconds. A Python lock hands over the moment the other writer commits."""
    key = path.resolve()
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(key)
        if lock is None:
            lock = _WRITE_LOCKS[key] = threading.Lock()
        return lock


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection of a follower's own. ``synchronous=NORMAL`` is enough: a cursor lost to a
    power cut only moves back (rollups roll back with it; the sink writes a batch again, which
    InfluxDB stores once — same series, same time)."""
    return sqlite.connect(path, synchronous="NORMAL", query_only=readonly)


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


class Follower:
    """One thread that calls :meth:`step` until it reports nothing left, then waits
    ``idle_s``; an exception is logged and retried after ``error_wait_s``, never fatal."""

    name = "follower"

    def __init__(self, path: Path, *, idle_s: float = 1.0, error_wait_s: float = 5.0) -> None:
        self.path = path
        self.idle_s = idle_s
        self.error_wait_s = error_wait_s
        self.position = 0
        """The last journal id done (committed): retention keeps everything after it."""
        self._stop = threading.Event()
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

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
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
            try:
                if db is None:
                    db = self.open()
                busy = self.step(db)
            except Exception:
                log.exception("journal follower %s failed; retrying", self.name)
                if db is not None:
                    db.close()
                    db = None
                self._stop.wait(self.error_wait_s)
                continue
            if not busy:
                self._stop.wait(self.idle_s)
        if db is not None:
            db.close()

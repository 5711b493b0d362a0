"""The InfluxDB sink: every journaled reading, in id order from a cursor kept in the journal,
written to InfluxDB (2.x, or 3.x through its v2 write API) in batches of line protocol.

Nothing is lost to an outage: the journal is the buffer. The cursor moves only after the server
accepted a batch, so a crash or a kill at any point sends that batch again (InfluxDB stores a
point once per series and time: a resend overwrites itself). Connection errors, 5xx, 429 and
refused credentials are retried with capped exponential backoff, for as long as it takes, while
ingestion goes on untouched: two threads of the sink's own — one reads and formats the next
batches, the other writes — with SQLite connections of their own. A batch the server refuses
for good (400, 413, 422: a malformed point, a type conflict, a point beyond the bucket's
retention) is split in halves until the refused points are found; they are set aside in
``sink_rejects`` with the server's reason and the rest goes through.

The backlog (rows, and age of the oldest unsent reading) is exported as Prometheus gauges and
in :meth:`InfluxSink.health`; ``on_trouble(True, since)`` is called once the server has been
unreachable for ``trouble_after_s``, ``on_trouble(False, at)`` once the backlog has drained.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from ingest.follower import (
    CURSOR_SCHEMA,
    connect,
    head,
    load_cursor,
    oldest_after,
    save_cursor,
    write_lock,
)
from ingest.influx_writer import WriteError, Writer
from ingest.lineproto import COLUMNS, LineFormatter, Row

log = logging.getLogger(__name__)

BACKLOG_ROWS = Gauge("jiayuan_influx_backlog_rows", "Journal rows not yet accepted by InfluxDB")
BACKLOG_AGE = Gauge(
    "jiayuan_influx_backlog_age_seconds",
    "Seconds since the oldest reading not yet accepted by InfluxDB was received (0 if none)",
)
REACHABLE = Gauge("jiayuan_influx_reachable", "1 while InfluxDB accepts writes")
WRITTEN = Counter("jiayuan_influx_points_written_total", "Points InfluxDB accepted")
REJECTED = Counter(
    "jiayuan_influx_points_rejected_total", "Points InfluxDB refused for good (set aside)"
)
SKIPPED = Counter(
    "jiayuan_influx_readings_skipped_total",
    "Journal rows with nothing to write (telemetry without known measurements)",
)
ERRORS = Counter(
    "jiayuan_influx_write_errors_total",
    "Failed write requests, by kind (connection, server, throttled, auth, client, refused)",
    ["kind"],
)
WRITE_SECONDS = Histogram(
    "jiayuan_influx_write_seconds",
    "Duration of accepted write requests",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)

SCHEMA = (
    CURSOR_SCHEMA
    + """
CREATE TABLE IF NOT EXISTS sink_rejects (
    id         INTEGER PRIMARY KEY,
    sink       TEXT NOT NULL,
    reading_id INTEGER NOT NULL,
    at         REAL NOT NULL,
    status     INTEGER,
    reason     TEXT NOT NULL,
    line       TEXT NOT NULL,
    UNIQUE (sink, reading_id)
);
"""
)

BACKOFF_FIRST_S = 0.5


@dataclass(slots=True)
class Batch:
    last_id: int
    """The last journal id read: the cursor once this batch is accepted."""
    ids: list[int]
    lines: list[str]
    caught_up: bool
    """The read found fewer rows than asked: this batch reaches the journal's head."""


class InfluxSink:
    def __init__(
        self,
        path: Path,
        writer: Writer,
        *,
        community: str,
        name: str = "influx",
        batch: int = 5000,
        backoff_max_s: float = 30.0,
        trouble_after_s: float = 300.0,
        on_trouble: Callable[[bool, float], None] | None = None,
        trouble_open: bool = False,
        idle_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.writer = writer
        self.name = name
        self.batch = batch
        self.backoff_max_s = backoff_max_s
        self.trouble_after_s = trouble_after_s
        self.on_trouble = on_trouble
        self.idle_s = idle_s
        self._clock = clock
        self._format = LineFormatter(community)
        self.position = 0
        """The last journal id InfluxDB accepted (or that had nothing to write)."""
        self.backlog_rows = 0
        self.backlog_age_s = 0.0
        self.rejected = 0
        self.last_error: str | None = None
        self.down_since: float | None = None
        self.trouble = trouble_open
        """The trouble alert is raised (also from before a restart): clear it on drain."""
        self._attempts = 0
        self._queue: queue.Queue[Batch] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_main, name=f"{name}-read", daemon=True),
            threading.Thread(target=self._write_main, name=f"{name}-write", daemon=True),
        ]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        db = connect(self.path)
        try:
            db.executescript(SCHEMA)
            self.position = load_cursor(db, self.name)
            self.rejected = int(
                db.execute(
                    "SELECT count(*) FROM sink_rejects WHERE sink = ?", (self.name,)
                ).fetchone()[0]
            )
            self._observe(db)
        finally:
            db.close()
        REACHABLE.set(1)
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop after the request in hand; an unaccepted batch is simply sent again next time."""
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)
        self.writer.close()

    def health(self) -> dict[str, Any]:
        if self.down_since is not None:
            unreachable = self._clock() - self.down_since >= self.trouble_after_s
            status = "unreachable" if unreachable else "retrying"
        else:
            status = "draining" if self.trouble else "ok"
        return {
            "status": status,
            "backlog_rows": self.backlog_rows,
            "backlog_age_s": round(self.backlog_age_s, 1),
            "rejected_points": self.rejected,
            "unreachable_since": None if self.down_since is None else _rfc3339(self.down_since),
            "last_error": self.last_error,
        }

    def prune_rejects(self, before: float) -> int:
        """Forget points set aside before ``before`` (with the raw readings' retention)."""
        db = connect(self.path)
        try:
            n = db.execute(
                "DELETE FROM sink_rejects WHERE sink = ? AND at < ?", (self.name, before)
            ).rowcount
        finally:
            db.close()
        self.rejected = max(0, self.rejected - n)
        return int(n)

    # ------------------------------------------------------------------ reading thread

    def _read_main(self) -> None:
        db: sqlite3.Connection | None = None
        position = self.position
        refreshed = -math.inf
        while not self._stop.is_set():
            try:
                if db is None:
                    db = connect(self.path, readonly=True)
                rows: list[Row] = db.execute(
                    f"SELECT {COLUMNS} FROM readings WHERE id > ? ORDER BY id LIMIT ?",
                    (position, self.batch),
                ).fetchall()
                if not rows:
                    self._stop.wait(self.idle_s)
                    continue
                now = time.monotonic()
                if now - refreshed > 60 or (
                    now - refreshed > 2 and not all(self._format.knows(r[1]) for r in rows)
                ):
                    self._format.set_devices(
                        db.execute("SELECT device_id, community, compound, building FROM devices")
                    )
                    refreshed = now
                batch = self._lines(rows)
            except Exception:
                log.exception("InfluxDB sink: reading the journal failed; retrying")
                if db is not None:
                    db.close()
                    db = None
                self._stop.wait(5.0)
                continue
            while not self._stop.is_set():
                try:
                    self._queue.put(batch, timeout=0.5)
                    break
                except queue.Full:
                    continue
            position = batch.last_id
        if db is not None:
            db.close()

    def _lines(self, rows: list[Row]) -> Batch:
        try:
            ids, lines = self._format.lines(rows)
        except Exception:  # a row the formatter cannot handle must not stop the sink
            log.exception("InfluxDB sink: cannot format journal rows; formatting one by one")
            ids, lines = [], []
            for row in rows:
                try:
                    text = self._format.line(row)
                except Exception:
                    log.error("InfluxDB sink: cannot format journal row %d; skipped", row[0])
                    continue
                if text is not None:
                    ids.append(row[0])
                    lines.append(text)
        if len(lines) < len(rows):
            SKIPPED.inc(len(rows) - len(lines))
        return Batch(rows[-1][0], ids, lines, len(rows) < self.batch)

    # ------------------------------------------------------------------ writing thread

    def _write_main(self) -> None:
        db: sqlite3.Connection | None = None
        batch: Batch | None = None
        while not self._stop.is_set():
            try:
                if db is None:
                    db = connect(self.path)
                if batch is None:
                    try:
                        batch = self._queue.get(timeout=self.idle_s)
                    except queue.Empty:
                        self._observe(db)
                        if self.backlog_rows == 0:
                            self._drained()
                        continue
                if not self._deliver(db, batch.ids, batch.lines):
                    break  # stopping: this batch was not accepted and will come again
                with write_lock(self.path):
                    save_cursor(db, self.name, batch.last_id)
                self.position = batch.last_id
                self._observe(db)
                if batch.caught_up or self.backlog_rows == 0:
                    self._drained()
                batch = None
            except Exception:  # the journal (say): keep the batch, send it again
                log.exception("InfluxDB sink: unexpected error; retrying in 5 s")
                if db is not None:
                    db.close()
                    db = None
                self._stop.wait(5.0)
        if db is not None:
            db.close()

    def _deliver(self, db: sqlite3.Connection, ids: list[int], lines: list[str]) -> bool:
        """Until the server has taken ``lines`` (or set aside what it refuses for good).
        False only when the sink is stopping."""
        while lines:
            t0 = time.perf_counter()
            try:
                self.writer.write("\n".join(lines).encode())
            except WriteError as e:
                ERRORS.labels(e.kind).inc()
                if not e.refused:
                    if not self._unreachable(db, e):
                        return False
                    continue
                self._reachable()
                if len(lines) == 1:
                    self._reject(db, ids[0], lines[0], e)
                    return True
                mid = len(lines) // 2
                return self._deliver(db, ids[:mid], lines[:mid]) and self._deliver(
                    db, ids[mid:], lines[mid:]
                )
            WRITE_SECONDS.observe(time.perf_counter() - t0)
            WRITTEN.inc(len(lines))
            self._reachable()
            return True
        return True

    def _reject(self, db: sqlite3.Connection, reading_id: int, line: str, e: WriteError) -> None:
        with write_lock(self.path), db:
            db.execute(
                "INSERT OR REPLACE INTO sink_rejects (sink, reading_id, at, status, reason, line)"
                " VALUES (?,?,?,?,?,?)",
                (self.name, reading_id, self._clock(), e.status, e.reason[:2000], line),
            )
        self.rejected += 1
        REJECTED.inc()
        # the reason and the line may hold measured values: they stay in the table, not the log
        log.warning(
            "InfluxDB refused journal row %d for good (%s); set aside in sink_rejects",
            reading_id,
            e.status,
        )

    def _unreachable(self, db: sqlite3.Connection, e: WriteError) -> bool:
        """Note a failed attempt and wait before the next. False when stopping."""
        now = self._clock()
        self.last_error = str(e)[:300]
        if self.down_since is None:
            self.down_since = now
            REACHABLE.set(0)
            log.warning(
                "InfluxDB write failed (%s); readings wait in the journal, retrying",
                self.last_error,
            )
        self._attempts += 1
        delay = min(self.backoff_max_s, BACKOFF_FIRST_S * 2 ** min(self._attempts - 1, 20))
        delay *= random.uniform(0.75, 1.0)
        if e.retry_after is not None:
            delay = min(max(delay, e.retry_after), max(self.backoff_max_s, 60.0))
        deadline = time.monotonic() + delay
        while True:
            self._observe(db)
            self._check_trouble()
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if self._stop.wait(min(left, 1.0)):
                return False

    def _reachable(self) -> None:
        if self.down_since is not None:
            log.info(
                "InfluxDB accepts writes again after %.0f s; draining the backlog",
                self._clock() - self.down_since,
            )
            self.down_since = None
            REACHABLE.set(1)
        self._attempts = 0

    def _check_trouble(self) -> None:
        if (
            not self.trouble
            and self.down_since is not None
            and self._clock() - self.down_since >= self.trouble_after_s
        ):
            self.trouble = True
            log.error(
                "InfluxDB unreachable for %.0f s (%s); raising the trouble alert",
                self._clock() - self.down_since,
                self.last_error,
            )
            self._notify(True, self.down_since)

    def _drained(self) -> None:
        if self.trouble and self.down_since is None:
            self.trouble = False
            log.info("InfluxDB backlog drained; resolving the trouble alert")
            self._notify(False, self._clock())

    def _notify(self, raised: bool, at: float) -> None:
        if self.on_trouble is None:
            return
        try:
            self.on_trouble(raised, at)
        except Exception:
            log.exception("InfluxDB sink: the trouble callback failed")

    def _observe(self, db: sqlite3.Connection) -> None:
        """Backlog: rows after the cursor, and how long ago the oldest of them arrived."""
        rows = max(0, head(db) - self.position)
        oldest = oldest_after(db, self.position) if rows else None
        self.backlog_rows = rows
        self.backlog_age_s = 0.0 if oldest is None else max(0.0, time.time() - oldest)
        BACKLOG_ROWS.set(rows)
        BACKLOG_AGE.set(self.backlog_age_s)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")

"""The InfluxDB sink: every journaled reading, in id order from a cursor kept in the journal,
written to InfluxDB (2.x, or 3.x through its v2 write API) in batches of line protocol.

A journal :class:`~ingest.follower.Follower`: the thread, the journal connection (opened again
after an error), the wake-up on commit, the stop and the backoff (base.retry's policy, a
server's Retry-After honoured) are the follower's, as for the rollups. What is the sink's own
is here, once for both journals: the lines, the write, what a refusal means, the split, the
health it reports. What differs between the journals is a :class:`SinkSource`: where the rows
are read, the cursor kept and refused points set aside — :class:`SqliteSource` (the SQLite
file, below) or :class:`ingest.influx_pg.PgSource` (PostgreSQL's partitions).

Nothing is lost to an outage: the journal is the buffer. The cursor moves only after the server
accepted a batch, so a crash or a kill at any point sends that batch again (InfluxDB stores a
point once per series and time: a resend overwrites itself). Connection errors, 5xx, 429 and
refused credentials are retried for as long as it takes, while ingestion goes on untouched. A
batch the server refuses for good (400, 413, 422: a malformed point, a type conflict, a point
beyond the bucket's retention) is split in halves until the refused points are found; they
are set aside in ``sink_rejects`` with the server's reason and the rest goes through.

The backlog (rows, and age of the oldest unsent reading) is exported as Prometheus gauges and
in :meth:`InfluxSink.health`; ``on_trouble(True, since)`` is called once the server has been
unreachable for ``trouble_after_s``, ``on_trouble(False, at)`` once the backlog has drained.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from prometheus_client import Counter, Gauge, Histogram

from base.retry import Backoff
from ingest.follower import (
    CURSOR_SCHEMA,
    Follower,
    Retry,
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

DEVICES = "SELECT device_id, community, compound, building FROM devices"
"""The devices' tags (the same SQL on both journals)."""

FIRST_RETRY_S = 0.5
"""The first pause after a failed write; it doubles up to ``backoff_max_s``."""
RETRY_AFTER_MAX_S = 60.0
"""A server's Retry-After is honoured up to this (or ``backoff_max_s`` if longer)."""


class Refused(NamedTuple):
    """A point set aside: a row of ``sink_rejects`` (with the sink's name)."""

    reading_id: int
    at: float
    status: int | None
    reason: str
    """The server's, cut to 2,000 characters."""
    line: str


class SinkSource(Protocol):
    """A journal as the sink sees it: rows after a cursor, the cursor, the points set aside.
    ``db`` is the connection :meth:`open` returned (the follower opens it again after an
    error)."""

    name: str
    """The sink's name: its cursor's, and its points' in ``sink_rejects``."""
    splits_cursor: bool
    """The cursor can stop within a batch: a split moves it past each half it settled, so an
    outage in the middle of a split sends none of them again. (False: it moves once a whole
    batch is settled, and a failure after the first half resends that half, kept once.)"""

    @property
    def position(self) -> int:
        """The last journal id the committed cursor has passed."""

    def open(self) -> Any:
        """A connection, the tables made, the cursor loaded."""

    def read(self, db: Any, limit: int) -> tuple[list[Row], bool]:
        """Up to about ``limit`` rows after the cursor in log order; True: more may follow."""

    def advance(self, db: Any, last_id: int) -> None:
        """Commit the cursor past the rows read, up to ``last_id`` where :attr:`splits_cursor`."""

    def rewind(self, db: Any) -> None:
        """After a failed step: read again from the committed cursor."""

    def reject(self, db: Any, point: Refused) -> None:
        """Set a refused point aside in ``sink_rejects`` (replacing one set aside before)."""

    def count_rejects(self, db: Any) -> int: ...

    def prune_rejects(self, before: float) -> tuple[int, int]:
        """Forget points set aside before ``before``: (forgotten, still set aside)."""

    def lag(self, db: Any) -> tuple[int, float | None]:
        """Rows after the cursor, and the receive time of the oldest of them."""

    def keep_after(self) -> int:
        """Retention may drop journal rows up to this id (all written, or set aside)."""

    def close(self) -> None: ...


@dataclass(slots=True)
class Batch:
    last_id: int
    """The last journal id read: the cursor once this batch is accepted."""
    ids: list[int]
    lines: list[str]
    full: bool
    """As many rows as asked: more may follow at once."""


class InfluxSink(Follower):
    """Not woken by each ingest commit (unlike the rules): caught up, it writes what came in
    the last ``idle_s``, so that steady ingestion makes a few larger requests rather than one
    per commit; a backlog goes out in ``batch``-row requests back to back.

    ``journal``: the SQLite journal's file (its cursor and points set aside under ``name``),
    or a :class:`SinkSource`, which carries the name (PostgreSQL's:
    :class:`ingest.influx_pg.PgSource`)."""

    def __init__(
        self,
        journal: Path | SinkSource,
        writer: Writer,
        *,
        community: str,
        name: str | None = None,
        batch: int = 5000,
        backoff_max_s: float = 30.0,
        trouble_after_s: float = 300.0,
        on_trouble: Callable[[bool, float], None] | None = None,
        trouble_open: bool = False,
        idle_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(journal, Path):
            self.source: SinkSource = SqliteSource(journal, name or "influx")
        elif name not in (None, journal.name):
            raise ValueError(f"the sink {name!r} over the source of {journal.name!r}")
        else:
            self.source = journal
        self.name = self.source.name
        first = min(FIRST_RETRY_S, backoff_max_s)
        super().__init__(
            journal if isinstance(journal, Path) else Path(),
            idle_s=idle_s,
            backoff=Backoff(first_s=first, max_s=backoff_max_s, jitter=0.25),
        )
        self.writer = writer
        self.batch = batch
        self.retry_after_max_s = max(backoff_max_s, RETRY_AFTER_MAX_S)
        self.trouble_after_s = trouble_after_s
        self.on_trouble = on_trouble
        self._clock = clock
        self._format = LineFormatter(community)
        self._devices_read = -math.inf
        self.backlog_rows = 0
        self.backlog_age_s = 0.0
        self.rejected = 0
        self.last_error: str | None = None
        self.down_since: float | None = None
        self.trouble = trouble_open
        """The trouble alert is raised (also from before a restart): clear it on drain."""

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> Any:
        db = self.source.open()
        self.position = self.source.position
        self.rejected = self.source.count_rejects(db)
        self._observe(db)
        return db

    def start(self) -> None:
        """Load the cursor and the backlog first (health answers at once), then follow."""
        self.open().close()
        REACHABLE.set(1)
        super().start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop after the request in hand; an unaccepted batch is simply sent again next time."""
        super().stop(timeout)
        self.writer.close()
        self.source.close()

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

    def keep_after(self) -> int:
        """Retention may drop journal rows up to this id (all written, or set aside)."""
        return self.source.keep_after()

    def prune_rejects(self, before: float) -> int:
        """Forget points set aside before ``before`` (with the raw readings' retention)."""
        n, self.rejected = self.source.prune_rejects(before)
        return n

    # ------------------------------------------------------------------ the follower's work

    def step(self, db: Any) -> bool:
        """Read, format and write the next batch; move the cursor once it is accepted."""
        try:
            batch = self._read(db)
            if batch is None:
                return False
            self._deliver(db, batch.ids, batch.lines)
            self._advance(db, batch.last_id)
        except BaseException:
            self.source.rewind(db)
            raise
        self._observe(db)
        if not batch.full or self.backlog_rows == 0:
            self._drained()
        return batch.full

    def tick(self, db: Any) -> None:
        """While resting (caught up, or before a retry): the backlog, the trouble alert."""
        self._observe(db)
        self._check_trouble()
        if self.backlog_rows == 0:
            self._drained()

    def _advance(self, db: Any, last_id: int) -> None:
        self.source.advance(db, last_id)
        self.position = self.source.position

    def _read_devices(self, db: Any, rows: list[Row]) -> None:
        """The devices' tags, read again every minute, or after 2 s for a device not known."""
        now = time.monotonic()
        if now - self._devices_read > 60 or (
            now - self._devices_read > 2 and not all(self._format.knows(r[1]) for r in rows)
        ):
            self._format.set_devices(db.execute(DEVICES))
            self._devices_read = now

    def _lines(self, rows: list[Row]) -> tuple[list[int], list[str]]:
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
        return ids, lines

    def _read(self, db: Any) -> Batch | None:
        rows, full = self.source.read(db, self.batch)
        self.position = self.source.position  # a source may follow other partitions now
        if not rows:
            return None
        self._read_devices(db, rows)
        ids, lines = self._lines(rows)
        return Batch(rows[-1][0], ids, lines, full)

    def _write(self, lines: list[str]) -> None:
        t0 = time.perf_counter()
        self.writer.write("\n".join(lines).encode())
        WRITE_SECONDS.observe(time.perf_counter() - t0)
        WRITTEN.inc(len(lines))

    def _deliver(self, db: Any, ids: list[int], lines: list[str]) -> None:
        """Until the server has taken ``lines``, or set aside what it refuses for good."""
        if not lines:
            return
        try:
            self._write(lines)
        except WriteError as e:
            self._failed(db, ids, lines, e)
        else:
            self._reachable()

    def _failed(self, db: Any, ids: list[int], lines: list[str], e: WriteError) -> None:
        """Raises :class:`Retry` while the server cannot be reached: the follower waits and
        takes the step again from the cursor (which a split moves past each half it settled,
        where the source's cursor can stop there). Refused for good: split in halves down to
        the refused lines, set aside."""
        ERRORS.labels(e.kind).inc()
        if not e.refused:
            self._unreachable(e)
            wait = None if e.retry_after is None else min(e.retry_after, self.retry_after_max_s)
            raise Retry(str(e), wait) from e
        self._reachable()
        if len(lines) == 1:
            self._reject(db, ids[0], lines[0], e)
            return
        mid = len(lines) // 2
        self._deliver(db, ids[:mid], lines[:mid])
        if self.source.splits_cursor:
            self._advance(db, ids[mid - 1])
        self._deliver(db, ids[mid:], lines[mid:])

    def _reject(self, db: Any, reading_id: int, line: str, e: WriteError) -> None:
        self.source.reject(db, Refused(reading_id, self._clock(), e.status, e.reason[:2000], line))
        # counted in the table: a batch taken again counts none twice
        self.rejected = self.source.count_rejects(db)
        REJECTED.inc()
        # the reason and the line may hold measured values: they stay in the table, not the log
        log.warning(
            "InfluxDB refused journal row %d for good (%s); set aside in sink_rejects",
            reading_id,
            e.status,
        )

    # ------------------------------------------------------------------ health

    def _unreachable(self, e: WriteError) -> None:
        self.last_error = str(e)[:300]
        if self.down_since is None:
            self.down_since = self._clock()
            REACHABLE.set(0)
            log.warning(
                "InfluxDB write failed (%s); readings wait in the journal, retrying",
                self.last_error,
            )
        self._check_trouble()

    def _reachable(self) -> None:
        if self.down_since is not None:
            log.info(
                "InfluxDB accepts writes again after %.0f s; draining the backlog",
                self._clock() - self.down_since,
            )
            self.down_since = None
            REACHABLE.set(1)

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

    def _observe(self, db: Any) -> None:
        """Backlog: rows after the cursor, and how long ago the oldest of them arrived."""
        rows, oldest = self.source.lag(db)
        self.backlog_rows = rows
        self.backlog_age_s = 0.0 if oldest is None else max(0.0, time.time() - oldest)
        BACKLOG_ROWS.set(rows)
        BACKLOG_AGE.set(self.backlog_age_s)


class SqliteSource:
    """The SQLite journal's file: rows in id order (ids only grow), the cursor in its
    ``cursors`` table — moved within a split too — and ``sink_rejects`` beside them, every
    write under the journal's :func:`~ingest.follower.write_lock`."""

    splits_cursor = True

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self.position = 0

    def open(self) -> sqlite3.Connection:
        db = connect(self.path)
        db.executescript(SCHEMA)
        self.position = load_cursor(db, self.name)
        return db

    def read(self, db: sqlite3.Connection, limit: int) -> tuple[list[Row], bool]:
        rows: list[Row] = db.execute(
            f"SELECT {COLUMNS} FROM readings WHERE id > ? ORDER BY id LIMIT ?",
            (self.position, limit),
        ).fetchall()
        return rows, len(rows) == limit

    def advance(self, db: sqlite3.Connection, last_id: int) -> None:
        with write_lock(self.path):
            save_cursor(db, self.name, last_id)
        self.position = last_id

    def rewind(self, db: sqlite3.Connection) -> None:
        """Nothing: :attr:`position` is the committed cursor, reads start from it."""

    def reject(self, db: sqlite3.Connection, point: Refused) -> None:
        with write_lock(self.path), db:
            db.execute(
                "INSERT OR REPLACE INTO sink_rejects (sink, reading_id, at, status, reason, line)"
                " VALUES (?,?,?,?,?,?)",
                (self.name, *point),
            )

    def count_rejects(self, db: sqlite3.Connection) -> int:
        (row,) = db.execute("SELECT count(*) FROM sink_rejects WHERE sink = ?", (self.name,))
        return int(row[0])

    def prune_rejects(self, before: float) -> tuple[int, int]:
        db = connect(self.path)
        try:
            with write_lock(self.path):
                n = db.execute(
                    "DELETE FROM sink_rejects WHERE sink = ? AND at < ?", (self.name, before)
                ).rowcount
            return int(n), self.count_rejects(db)
        finally:
            db.close()

    def lag(self, db: sqlite3.Connection) -> tuple[int, float | None]:
        rows = max(0, head(db) - self.position)
        return rows, oldest_after(db, self.position) if rows else None

    def keep_after(self) -> int:
        return self.position

    def close(self) -> None:
        """Nothing: the follower's connection is the only one kept."""


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")

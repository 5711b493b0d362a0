"""Where the rules worker reads its journal rows, and where its cursor is kept: one small
interface, two journals.

- :class:`SqliteRows`: the SQLite journal file, rows after one id (``rule_cursor`` in the alert
  database); one writer, so ids are commit-ordered. What it reads it hands on (``tap``) to the
  rollups, which fold those rows instead of reading and decoding them a second time.
- :class:`PgRows`: the PostgreSQL journal through :class:`ingest.journal_pg.JournalFollower`,
  one ``(xid, id)`` cursor per device partition in ``follower_cursors`` (several instances may
  write the journal at once: docs/district.md). The journal and the alert store are the same
  database, so the cursors commit in the alert store's transaction, with the alert changes.
  ``partitions`` is the set this instance evaluates: every partition today (one instance);
  the partitions it holds by lease once several instances share the work. The rows come in
  ``(xid, id)`` order behind every open transaction (:mod:`district.follow`), except urgent
  ones (events: falls, SOS, alarms; statuses), which the rules worker's source reads as soon
  as their transaction commits, each after its device's committed rows before it, and records
  with the cursors (``follower_ahead``): the ordered read skips them later. A fall is raised
  without waiting for the telemetry transactions still open; each row is evaluated once.

Either way the cursor a source :meth:`~RowSource.save`s is the one it has read to; the worker
calls :meth:`~RowSource.saved` once that transaction committed, and :meth:`~RowSource.load`
(which also forgets what was read) after a failure.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from base.sql import Db
from ingest import follower, rows
from ingest.pg_follower import PgRows

__all__ = ["PgRows", "RowSource", "SqliteRows"]


class RowSource(Protocol):
    name: str

    @property
    def position(self) -> int:
        """The newest journal id whose evaluation is committed (on PostgreSQL: the greatest
        over the partitions; ids there are not commit-ordered, so only for display)."""
        ...

    @property
    def dirty(self) -> bool:
        """Rows were read since the cursor was last committed."""
        ...

    def load(self, db: Db) -> None:
        """The committed cursor (made when there is none), on the alert store's connection;
        what was read since is forgotten."""
        ...

    def read(self, limit: int) -> tuple[list[rows.Row], bool]:
        """Up to about ``limit`` rows after what was read; True when there may be more."""
        ...

    def save(self, db: Db) -> None:
        """Write the cursor read to, in the alert store's transaction ``db``."""
        ...

    def saved(self) -> None:
        """That transaction committed."""
        ...

    def lag(self) -> tuple[int, float | None]:
        """(rows not evaluated yet, receive time of the oldest of them): any thread."""
        ...

    def keep_after(self) -> int:
        """Retention may drop journal rows up to this id: none after it is unevaluated."""
        ...

    def close(self) -> None: ...


class SqliteRows:
    """The SQLite journal file at ``path``: rows after ``rule_cursor.last_id``."""

    def __init__(
        self,
        path: Path,
        name: str = "rules",
        tap: Callable[[int, list[rows.Row]], None] | None = None,
    ) -> None:
        self.path = path
        self.name = name
        self.tap = tap
        """Given each batch read with the id it was read after (every journal row in
        ``(after, batch[-1].id]``): the rollups fold them rather than read them again
        (:meth:`ingest.rollups.RollupWorker.offer`)."""
        self._committed = 0
        self._read = 0
        self._db: sqlite3.Connection | None = None

    @property
    def position(self) -> int:
        return self._committed

    @property
    def dirty(self) -> bool:
        return self._read != self._committed

    def load(self, db: Db) -> None:
        db.execute(
            "INSERT INTO rule_cursor (name, last_id, updated) VALUES (?, 0, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (self.name, time.time()),
        )
        (position,) = db.execute(
            "SELECT last_id FROM rule_cursor WHERE name = ?", (self.name,)
        ).fetchone()
        self._committed = self._read = int(position)

    def read(self, limit: int) -> tuple[list[rows.Row], bool]:
        if self._db is None:
            self._db = follower.connect(self.path, readonly=True)
        batch = rows.after(self._db, self._read, limit)
        if batch:
            if self.tap is not None:
                self.tap(self._read, batch)
            self._read = batch[-1][0]
        return batch, len(batch) == limit

    def keep_after(self) -> int:
        return self._committed

    def save(self, db: Db) -> None:
        if self.dirty:
            db.execute(
                "UPDATE rule_cursor SET last_id = ?, updated = ? WHERE name = ?",
                (self._read, time.time(), self.name),
            )

    def saved(self) -> None:
        self._committed = self._read

    def lag(self) -> tuple[int, float | None]:
        db = follower.connect(self.path, readonly=True)
        try:
            position = self._committed
            head = follower.head(db)
            oldest = follower.oldest_after(db, position) if head > position else None
        finally:
            db.close()
        return max(0, head - position), oldest

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

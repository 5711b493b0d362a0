"""Where the rules worker reads its journal rows, and where its cursor is kept: one small
interface, two journals.

- :class:`SqliteRows`: the SQLite journal file, rows after one id (``rule_cursor`` in the alert
  database); one writer, so ids are commit-ordered.
- :class:`PgRows`: the PostgreSQL journal through :class:`ingest.journal_pg.JournalFollower`,
  one ``(xid, id)`` cursor per device partition in ``follower_cursors`` (several instances may
  write the journal at once: docs/district.md). The journal and the alert store are the same
  database, so the cursors commit in the alert store's transaction, with the alert changes.
  ``partitions`` is the set this instance evaluates: every partition today (one instance);
  the partitions it holds by lease once several instances share the work.

Either way the cursor a source :meth:`~RowSource.save`s is the one it has read to; the worker
calls :meth:`~RowSource.saved` once that transaction committed, and :meth:`~RowSource.load`
(which also forgets what was read) after a failure.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import psycopg

from base.sql import Db, PgDb
from district.pg import Connection, connect
from ingest import follower, rows


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

    def __init__(self, path: Path, name: str = "rules") -> None:
        self.path = path
        self.name = name
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


_LAG = """
SELECT coalesce(sum(x.n), 0), min(x.oldest), min(x.first)
FROM unnest(%s::smallint[]) AS p(partition)
LEFT JOIN follower_cursors c ON c.follower = %s AND c.partition = p.partition
CROSS JOIN LATERAL (
    SELECT count(*) AS n, min(r.received) AS oldest, min(r.id) AS first FROM readings r
    WHERE r.partition = p.partition
      AND (r.xid, r.id) > (coalesce(c.xid, '0'::xid8), coalesce(c.id, 0))
) AS x
"""
"""Rows after each partition's cursor: one index range per partition (readings_follow)."""


class PgRows:
    """The PostgreSQL journal at ``url`` over ``partitions`` (:class:`JournalFollower`)."""

    def __init__(self, url: str, partitions: Iterable[int], name: str = "rules") -> None:
        self.url = url
        self.name = name
        self.partitions = sorted(set(partitions))
        self._follower: Any = None  # JournalFollower, once loaded
        self._db: Connection | None = None
        self._health: Connection | None = None
        self._health_lock = threading.Lock()

    def _conn(self) -> Connection:
        if self._db is None or self._db.closed:
            self._db = connect(self.url, name=f"jiayuan-{self.name}", autocommit=True)
        return self._db

    @property
    def position(self) -> int:
        f = self._follower
        return 0 if f is None else max((p.id for p in f.committed.values()), default=0)

    @property
    def dirty(self) -> bool:
        f = self._follower
        return f is not None and f.position != f.committed

    def load(self, db: Db) -> None:
        from ingest.journal_pg import JournalFollower

        conn = db.conn if isinstance(db, PgDb) else self._conn()
        self._follower = JournalFollower(conn, self.name, self.partitions)

    def read(self, limit: int) -> tuple[list[rows.Row], bool]:
        per = max(50, limit // max(1, len(self.partitions)))
        try:
            got = self._follower.next_rows(self._conn(), per)
        except psycopg.Error:
            self.close()  # a new connection for the next attempt
            raise
        counts: dict[int, int] = {}
        for p, _ in got:
            counts[p] = counts.get(p, 0) + 1
        return [row for _, row in got], any(n >= per for n in counts.values())

    def save(self, db: Db) -> None:
        if not isinstance(db, PgDb):
            raise TypeError("the PostgreSQL journal's cursor commits with a PostgreSQL alert store")
        self._follower.save(db.conn)

    def saved(self) -> None:
        self._follower.saved()

    def keep_after(self) -> int:
        """Ids are not commit-ordered here (several writers), so not the cursors' ids: one less
        than the smallest id of a row still unevaluated in any partition (or, when none is, the
        greatest id in the journal). A row committed later with a smaller id lands on its own
        (recent) day, never in a partition old enough for retention."""
        first = self._behind()[2]
        if first is not None:
            return int(first) - 1
        with connect(self.url, name=f"jiayuan-{self.name}", autocommit=True) as db:
            row = db.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()
        return int(row[0]) if row else 0

    def lag(self) -> tuple[int, float | None]:
        n, oldest, _ = self._behind()
        return n, oldest

    def _behind(self) -> tuple[int, float | None, int | None]:
        with self._health_lock:
            db = self._health
            if db is None or db.closed:
                db = self._health = connect(self.url, name=f"jiayuan-{self.name}", autocommit=True)
            try:
                row = db.execute(_LAG, (self.partitions, self.name)).fetchone()
            except psycopg.Error:
                db.close()
                raise
        n, oldest, first = (0, None, None) if row is None else row
        return int(n), None if oldest is None else float(oldest), first

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        with self._health_lock:
            if self._health is not None:
                self._health.close()
                self._health = None

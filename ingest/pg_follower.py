"""Following the PostgreSQL journal over a set of device partitions, with the cursors committed
in the caller's transaction: what the rules worker (rules/sources.py) and the InfluxDB sink
(ingest/influx_pg.py) read the journal through. :class:`ingest.journal_pg.JournalFollower`
underneath; this adds the connection, the backlog and retention's bound."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import psycopg

from base.sql import Db, PgDb
from district.leases import Lease, fence_all
from district.pg import Connection, connect
from ingest import rows

_LAG = """
SELECT coalesce(sum(x.n), 0), min(x.oldest), min(x.first)
FROM unnest(%s::smallint[]) AS p(partition)
LEFT JOIN follower_cursors c ON c.follower = %s AND c.partition = p.partition
CROSS JOIN LATERAL (
    SELECT count(*) AS n, min(r.received) AS oldest, min(r.id) AS first FROM readings r
    WHERE r.partition = p.partition
      AND (r.xid, r.id) > (coalesce(c.xid, '0'::xid8), coalesce(c.id, 0))
      AND NOT EXISTS (
          SELECT 1 FROM follower_ahead a WHERE a.follower = %s
          AND a.partition = p.partition AND a.xid = r.xid AND a.id = r.id)
) AS x
"""
"""Rows after each partition's cursor not evaluated ahead of it: one index range per partition
(readings_follow)."""


class PgRows:
    """The PostgreSQL journal at ``url`` over ``partitions`` (:class:`JournalFollower`)."""

    def __init__(
        self,
        url: str,
        partitions: Iterable[int],
        name: str = "rules",
        *,
        fence: tuple[str, dict[int, Lease]] | None = None,
        ahead: bool = False,
    ) -> None:
        self.url = url
        self.name = name
        self.partitions = sorted(set(partitions))
        self.fence = fence
        """(instance id, the leases ``partitions`` are held under): every :meth:`save` checks
        them with :func:`district.leases.fence_all` in the caller's transaction, so a former
        holder's late commit is refused (:class:`~district.leases.LeaseLost`) and rolled back.
        None: one instance evaluates every partition, nothing to fence."""
        self.ahead = ahead
        """Urgent rows are read as soon as they commit, ahead of the horizon, and recorded
        with the cursors (:class:`~ingest.journal_pg.JournalFollower`): the rules worker's."""
        self.urgent = True
        """Urgent rows were committed since the last read (set by any thread, before it wakes
        the reader): the next :meth:`read` looks above the horizon for them (one statement),
        which it does not otherwise. Also after :meth:`load` (a start, a takeover, a failed
        commit). Only a matter of latency: the ordered read reaches every row in any case."""
        self.unfenced = False
        """Set while the lease rows are held by this instance's own lease transaction (a
        release waiting for this commit: :meth:`RulesWorker.release`), where fencing would wait
        on that very transaction."""
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
        return f is not None and bool(f.dirty)

    def load(self, db: Db) -> None:
        from ingest.journal_pg import JournalFollower

        conn = db.conn if isinstance(db, PgDb) else self._conn()
        self._follower = JournalFollower(conn, self.name, self.partitions, ahead=self.ahead)
        self.urgent = True

    def read(self, limit: int) -> tuple[list[rows.Row], bool]:
        if not self.partitions:  # none held (yet)
            return [], False
        per = max(50, limit // max(1, len(self.partitions)))
        look, self.urgent = self.urgent, False  # (cleared before the read: none is missed)
        try:
            got = self._follower.next_rows(self._conn(), per, ahead=look)
        except psycopg.Error:
            self.close()  # a new connection for the next attempt
            raise
        return [row for _, row in got], bool(self._follower.full)

    def save(self, db: Db) -> None:
        if not isinstance(db, PgDb):
            raise TypeError("the PostgreSQL journal's cursor commits with a PostgreSQL alert store")
        if self.fence is not None and not self.unfenced:
            instance_id, leases = self.fence
            fence_all(db.conn, instance_id, leases.values())
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
                row = db.execute(_LAG, (self.partitions, self.name, self.name)).fetchone()
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

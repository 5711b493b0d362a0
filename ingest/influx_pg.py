"""The InfluxDB sink over the PostgreSQL journal: ``InfluxSink(PgSource(url, …), writer, …)``
(:class:`ingest.influx.InfluxSink`: the same thread, backoff, formatting, split, trouble alert
and health as on SQLite) over :class:`PgSource`, which reads
through :class:`ingest.pg_follower.PgRows` — the journal's follower over a set of device
partitions, cursors in ``follower_cursors`` moved once the server accepted a batch — and sets
refused points aside in the database's ``sink_rejects`` (district/migrations/0008_sink.sql).

One difference: a batch the server refuses in part is split in halves as on SQLite, but the
cursors (one per partition, in log order) cannot stop half-way through a batch; a failure after
the first half was accepted sends that half again, which the store keeps once (same series,
same time).

With several instances (``leases``: the instance's :class:`district.leases.LeaseKeeper` of
device partitions) the sink follows the partitions its instance holds, the same leases as the
rules worker: between batches it reads over the set held now, from each partition's committed
cursor. Its cursor writes are not fenced: every row up to any cursor it writes was accepted by
the server, and a point sent twice is kept once, so a former holder's late write (which may
move a cursor back) costs a resend, never a loss."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from base.sql import PgDb
from district.leases import Lease
from district.pg import Connection, connect
from ingest.influx import Refused
from ingest.lineproto import Row
from ingest.pg_follower import PgRows
from ingest.rows import Row as JournalRow

log = logging.getLogger(__name__)


class Held(Protocol):
    """What the sink needs of a :class:`district.leases.LeaseKeeper`."""

    def owned(self) -> dict[int, Lease]: ...


def _sink_row(r: JournalRow) -> Row:
    """The sink's row (id, device, kind, stream, ms, event, payload) of a journal row."""
    return (r[0], r[1], r[2], r[3], round(r[4] * 1000), r[7], r[9])


class PgSource:
    """The PostgreSQL journal as the sink's :class:`~ingest.influx.SinkSource`."""

    splits_cursor = False

    def __init__(
        self,
        url: str,
        *,
        partitions: Iterable[int],
        leases: Held | None = None,
        name: str = "influx",
    ) -> None:
        self.url = url
        self.name = name
        """The sink's name: its points in ``sink_rejects``; its cursors are ``sink:<name>``."""
        self.leases = leases
        """The instance's partition leases (None: ``partitions``, every one)."""
        self.rows = PgRows(url, () if leases is not None else partitions, name=f"sink:{name}"[:200])

    @property
    def position(self) -> int:
        return self.rows.position

    def open(self) -> Connection:
        db = connect(self.url, name="jiayuan-influx", autocommit=True)
        self.rows.load(PgDb(db))
        return db

    def read(self, db: Connection, limit: int) -> tuple[list[Row], bool]:
        self._follow(db)
        got, more = self.rows.read(limit)
        return [_sink_row(r) for r in got], more

    def _follow(self, db: Connection) -> None:
        """Read over the partitions held now (between batches: nothing read is uncommitted)."""
        if self.leases is None:
            return
        held = sorted(self.leases.owned())
        if held == self.rows.partitions:
            return
        log.info("InfluxDB sink: following %d partitions", len(held))
        self.rows.close()
        self.rows = PgRows(self.url, held, name=self.rows.name)
        self.rows.load(PgDb(db))

    def advance(self, db: Connection, last_id: int) -> None:
        """Every partition's cursor past what was read (``last_id`` is not the whole story:
        ids are not commit-ordered across partitions)."""
        del last_id
        with db.transaction():
            self.rows.save(PgDb(db))
        self.rows.saved()

    def rewind(self, db: Connection) -> None:
        self.rows.load(PgDb(db))

    def reject(self, db: Connection, point: Refused) -> None:
        db.execute(
            "INSERT INTO sink_rejects (sink, reading_id, at, status, reason, line)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (sink, reading_id) DO UPDATE"
            " SET at = excluded.at, status = excluded.status, reason = excluded.reason,"
            " line = excluded.line",
            (self.name, *point),
        )

    def count_rejects(self, db: Connection) -> int:
        q = "SELECT count(*) FROM sink_rejects WHERE sink = %s"
        row = db.execute(q, (self.name,)).fetchone()
        return int(row[0]) if row else 0

    def prune_rejects(self, before: float) -> tuple[int, int]:
        with connect(self.url, name="jiayuan-influx", autocommit=True) as db:
            n = db.execute(
                "DELETE FROM sink_rejects WHERE sink = %s AND at < %s", (self.name, before)
            ).rowcount
            return int(n), self.count_rejects(db)

    def lag(self, db: Connection) -> tuple[int, float | None]:
        del db
        return self.rows.lag()

    def keep_after(self) -> int:
        return self.rows.keep_after()

    def close(self) -> None:
        self.rows.close()

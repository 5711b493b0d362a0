"""The InfluxDB sink over the PostgreSQL journal: what :class:`ingest.influx.InfluxSink` does on
the SQLite file (same thread, backoff, formatting, trouble alert, health), reading through
:class:`ingest.pg_follower.PgRows` — the journal's follower over a set of device partitions,
cursors in ``follower_cursors`` moved once the server accepted a batch — and setting refused
points aside in the database's ``sink_rejects`` (district/migrations/0008_sink.sql).

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
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from base.sql import PgDb
from district.leases import Lease
from district.pg import Connection, connect
from ingest.follower import Retry
from ingest.influx import ERRORS, REJECTED, Batch, InfluxSink
from ingest.influx_writer import WriteError, Writer
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


class PgInfluxSink(InfluxSink):
    """The sink on the PostgreSQL journal at ``url``, over ``partitions``."""

    def __init__(
        self,
        url: str,
        writer: Writer,
        *,
        partitions: Iterable[int],
        leases: Held | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(Path(), writer, **kwargs)
        self.url = url
        self.leases = leases
        """The instance's partition leases (None: ``partitions``, every one)."""
        self.rows = PgRows(
            url, () if leases is not None else partitions, name=f"sink:{self.name}"[:200]
        )

    def _follow(self, db: Any) -> None:
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
        self.position = self.rows.position

    # ------------------------------------------------------------------ the journal's side

    def open(self) -> Any:
        db = connect(self.url, name="jiayuan-influx", autocommit=True)
        self.rows.load(PgDb(db))
        self.position = self.rows.position
        self._count_rejects(db)
        self._observe(db)
        return db

    def keep_after(self) -> int:
        return self.rows.keep_after()

    def step(self, db: Any) -> bool:
        try:
            return super().step(db)
        except BaseException:
            self.rows.load(PgDb(db))  # read again from the committed cursors
            raise

    def _read(self, db: Any, after: int) -> Batch | None:
        del after
        self._follow(db)
        got, more = self.rows.read(self.batch)
        if not got:
            return None
        batch = [_sink_row(r) for r in got]
        self._read_devices(db, batch)
        ids, lines = self._lines(batch)
        return Batch(batch[-1][0], ids, lines, more)

    def _advance(self, db: Any, last_id: int) -> None:
        del last_id
        conn: Connection = db
        with conn.transaction():
            self.rows.save(PgDb(conn))
        self.rows.saved()
        self.position = self.rows.position

    def _read_devices(self, db: Any, rows: list[Row]) -> None:
        now = time.monotonic()
        if now - self._devices_read > 60 or (
            now - self._devices_read > 2 and not all(self._format.knows(r[1]) for r in rows)
        ):
            self._format.set_devices(
                db.execute("SELECT device_id, community, compound, building FROM devices")
            )
            self._devices_read = now

    def _failed(self, db: Any, ids: list[int], lines: list[str], e: WriteError) -> None:
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
        self._deliver(db, ids[mid:], lines[mid:])

    def _reject(self, db: Any, reading_id: int, line: str, e: WriteError) -> None:
        db.execute(
            "INSERT INTO sink_rejects (sink, reading_id, at, status, reason, line)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (sink, reading_id) DO UPDATE"
            " SET at = excluded.at, status = excluded.status, reason = excluded.reason,"
            " line = excluded.line",
            (self.name, reading_id, self._clock(), e.status, e.reason[:2000], line),
        )
        self._count_rejects(db)
        REJECTED.inc()
        log.warning(
            "InfluxDB refused journal row %d for good (%s); set aside in sink_rejects",
            reading_id,
            e.status,
        )

    def _count_rejects(self, db: Any) -> None:
        row = db.execute("SELECT count(*) FROM sink_rejects WHERE sink = %s", (self.name,))
        self.rejected = int(row.fetchone()[0])

    def _observe(self, db: Any) -> None:
        del db
        self._backlog(*self.rows.lag())

    def prune_rejects(self, before: float) -> int:
        with connect(self.url, name="jiayuan-influx", autocommit=True) as db:
            n = db.execute(
                "DELETE FROM sink_rejects WHERE sink = %s AND at < %s", (self.name, before)
            ).rowcount
            self._count_rejects(db)
        return int(n)

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        self.rows.close()

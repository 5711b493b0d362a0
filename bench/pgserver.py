"""The PostgreSQL server as the benchmark sees it while the whole service runs on it: its CPU,
what it committed and wrote, and the journal's bytes on disk.

- CPU: the server's processes from ``/proc`` — the postmaster, its live children (backends,
  WAL writer, checkpointer, autovacuum …) and, through the postmaster's ``cutime``/``cstime``,
  the children that ended and were reaped.
- Work: ``pg_stat_database`` (``xact_commit``: every transaction the service ran, reads
  included), the transaction ids handed out (write transactions: ``pg_snapshot_xmax`` of the
  current snapshot, which takes no id itself), ``pg_stat_user_tables`` (rows inserted, updated
  and deleted; temporary tables left out: the journal's ``COPY`` goes through a temporary
  staging table, a row each that is never written to WAL or kept) and the WAL position (bytes
  of WAL). A backend sends its statistics at most once
  a second and within a second of going idle: :meth:`PgServer.snapshot` waits ``settle``
  seconds first.
- Disk: ``pg_total_relation_size`` (heap, indexes, TOAST) of each of the journal's partitions
  (``readings`` is partitioned by day), over the readings each holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from base import procstat
from devtools.postgres import Postgres
from district.pg import connect

DATABASE = "jiayuan"

_WORK = """
SELECT d.xact_commit,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
       coalesce(t.ins, 0), coalesce(t.upd, 0), coalesce(t.del, 0),
       pg_current_wal_lsn() - '0/0'::pg_lsn
FROM pg_stat_database d,
     (SELECT sum(n_tup_ins) AS ins, sum(n_tup_upd) AS upd, sum(n_tup_del) AS del
      FROM pg_stat_user_tables WHERE schemaname NOT LIKE 'pg_temp%') t
WHERE d.datname = current_database()
"""

_PARTITIONS = """
SELECT c.relname, pg_total_relation_size(c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'readings'::regclass
ORDER BY c.relname
"""


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the server: the postmaster with its reaped children, and the live
    children (read from every ``/proc/<pid>/stat`` whose parent is the postmaster)."""
    f = procstat.fields(postmaster)
    if f is None:
        raise ProcessLookupError(f"no PostgreSQL server {postmaster}")
    seconds = sum(int(x) for x in f[11:15]) * procstat.TICK_S  # utime, stime, cutime, cstime
    for child in procstat.children(postmaster):
        # (one ended meanwhile: its time is in the postmaster's cutime once reaped)
        seconds += procstat.cpu_seconds(child) or 0.0
    return seconds


@dataclass(frozen=True)
class Work:
    """Counters of the server at one moment (cumulative)."""

    cpu_s: float
    commits: int
    xids: int
    inserted: int
    updated: int
    deleted: int
    wal_bytes: int

    def minus(self, other: Work) -> Work:
        return Work(
            self.cpu_s - other.cpu_s,
            self.commits - other.commits,
            self.xids - other.xids,
            self.inserted - other.inserted,
            self.updated - other.updated,
            self.deleted - other.deleted,
            self.wal_bytes - other.wal_bytes,
        )

    def plus(self, other: Work) -> Work:
        return Work(
            self.cpu_s + other.cpu_s,
            self.commits + other.commits,
            self.xids + other.xids,
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.deleted + other.deleted,
            self.wal_bytes + other.wal_bytes,
        )

    @property
    def rows(self) -> int:
        """Rows written: inserted, updated and deleted."""
        return self.inserted + self.updated + self.deleted


NOTHING = Work(0.0, 0, 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class Partition:
    name: str
    rows: int
    bytes: int


class PgServer:
    """A throwaway PostgreSQL with its durable defaults (fsync, synchronous_commit on) and the
    service's database ``jiayuan``: :attr:`url` for ``JIAYUAN_DATABASE_URL``."""

    def __init__(self) -> None:
        self.pg = Postgres().start()
        self.url = self.pg.create_database(DATABASE)
        self.version = self.pg.bindir.parent.name

    @property
    def postmaster(self) -> int:
        return int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])

    def snapshot(self, settle: float = 1.5) -> Work:
        """The server's counters, after ``settle`` seconds for the backends' statistics."""
        time.sleep(settle)
        with connect(self.url, name="bench", autocommit=True) as db:
            row = db.execute(_WORK.encode()).fetchone()
        assert row is not None
        commits, xids, ins, upd, dele, wal = (int(v) for v in row)
        return Work(server_cpu(self.postmaster), commits, xids, ins, upd, dele, wal)

    def partitions(self) -> list[Partition]:
        """The journal's partitions that hold readings: rows and bytes on disk (indexes and
        TOAST included)."""
        out = []
        with connect(self.url, name="bench", autocommit=True) as db:
            sizes = db.execute(_PARTITIONS.encode()).fetchall()
            for name, size in sizes:
                q = f'SELECT count(*) FROM "{name}"'
                row = db.execute(q.encode()).fetchone()
                n = int(row[0]) if row else 0
                if n:
                    out.append(Partition(str(name), n, int(size)))
        return out

    def tables(self, top: int = 6) -> list[tuple[str, int]]:
        """The tables with the most rows written (inserted, updated, deleted) since the start,
        most first: what a message's rows are."""
        with connect(self.url, name="bench", autocommit=True) as db:
            rows = db.execute(
                b"SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS n FROM pg_stat_user_tables"
                b" WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 AND schemaname NOT LIKE"
                b" 'pg_temp%%' ORDER BY n DESC, relname LIMIT %s",
                (top,),
            ).fetchall()
        return [(str(name), int(n)) for name, n in rows]

    def stop(self) -> None:
        self.pg.stop()

"""The journal on PostgreSQL: what :class:`ingest.journal.Journal` does on SQLite, for several
instances that share one database (docs/district.md, "The journal on PostgreSQL").

Rows hold what the SQLite journal's hold: kind and stream as one number (``shape``), times as
epoch seconds, the payload in :mod:`ingest.rowcodec`'s compact form (``bytea``; JSON text, as
UTF-8 bytes with :data:`JSON_PAYLOAD` added to ``shape``, when the compact form cannot hold it).
Not typed columns per measurement: every reader (the rules worker's ``rows.to_reading`` and
``FastRows``, the API, the sinks) already reads that form, a wearable's payload is ~15 bytes
in it against a dozen nullable columns, and a new payload field needs no migration. What SQL
would gain from typed columns (aggregates in the database) is done here in Python on one
device's rows, as the API asks for them.

Three columns the SQLite journal has no need of: ``partition`` (the device's
:func:`district.partitions.partition_of`: which lease holder evaluates it), ``xid`` (the writing
transaction: :mod:`district.follow` reads in ``(xid, id)`` order behind every open transaction,
so several writers' rows reach a follower once each) and ``pts``, the time the table is
partitioned by, one partition per UTC day. ``pts`` is the reading's event time ``ts`` (the
device's own when decode believed it, else the receive time), so a redelivered message lands
on its first copy's day and the unique index ``(device_id, pts, dedup)`` drops it.

A reading whose day has no partition is never an error: the day is made on the spot (counted
in :attr:`PgJournal.counters`, ``partitions_made``), unless retention already dropped it (its
end is at or before the floor :meth:`PgJournal.prune` records) or its ``ts`` lies outside
decode's window around its receive time: then it is stored on its receive time's day (counted
in ``pts_fallbacks``; its duplicate is no longer recognised by time, which is the one case the
SQLite journal handles better). A partition dropped by retention (this instance's or
another's) between the journal's look and its insert costs one retry (``partition_retries``).

Writes come from one thread (the pipeline's) on a connection of their own, through ``COPY``
into a temporary table and one ``INSERT … SELECT … ON CONFLICT DO NOTHING`` (bench/
store_writes.py: 2.5 times ``executemany``); reads from any thread, through a pool.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar, cast

import psycopg
from prometheus_client import Counter
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from district import follow, timeparts
from district.live import notify
from district.migrate import migrate
from district.partitions import DEFAULT_PARTITIONS, partition_of
from district.pg import Connection, connect, open_pool
from ingest import rowcodec, rows
from ingest.journal import FORGET_IDLE_S, SHAPES, _body, dedup_key
from ingest.journal_store import (
    BatchResult,
    Step,
    dead_letter_item,
    dead_letter_rows,
    raw_item,
)
from ingest.metrics import DEADLOCK_RETRIES, PARTITION_RETRIES, PARTITIONS_MADE, PTS_FALLBACKS
from ingest.payloads import MAX_AGE_S, MAX_FUTURE_S, MAX_NUMBER, DeadLetter, Reading
from ingest.schema import kinds_with_metric
from ingest.seen import SEEN_MAX, SeenDevices, device_states
from registry import Registry

log = logging.getLogger(__name__)

DAY: Final = 86_400
JSON_PAYLOAD: Final = 16
"""Added to ``shape`` when the payload is JSON text (UTF-8) rather than rowcodec's form."""
_NAMES: Final = {shape: names for names, shape in SHAPES.items()}
URGENT_CHANNEL: Final = "jiayuan_urgent"
"""Notified (``{"partitions": [...]}``) by a write that holds urgent rows (events, statuses),
as it commits: the rules worker that holds one of those partitions, on any instance, reads them
at once (:class:`rules.worker.RulesWorker`) rather than at its next wake-up of its own."""
AHEAD_DAYS: Final = 7
"""Days of partitions made ahead when the journal opens (a maintenance job keeps it so)."""

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS journal_staging (
    ord integer, partition smallint, pts float8, device_id text, shape smallint, ts float8,
    received float8, seq bigint, dedup bigint, event text, ts_flag text, payload bytea
) ON COMMIT DELETE ROWS
"""
_STAGING_TYPES: Final = [
    "integer",
    "smallint",
    "float8",
    "text",
    "smallint",
    "float8",
    "float8",
    "bigint",
    "bigint",
    "text",
    "text",
    "bytea",
]
_COPY: Final = "COPY journal_staging FROM STDIN (FORMAT BINARY)"
LATE_S: Final = MAX_AGE_S + 3600.0
"""A statement that writes a reading whose ``pts`` lies more than this before the server's clock
records its span in ``journal_outliers`` (the trigger of migration 0014): a day and an hour,
as decode believes a device's time up to a day old, and a batch is written within moments of
its receive time unless it was held."""
EARLY_S: Final = float(DAY)
"""… or more than this after it: decode believes a device's time up to ``MAX_FUTURE_S`` ahead,
and a day allows for an instance's clock out by nearly as much before its every batch is an
outlier."""
STEP_S: Final = 3600.0
"""Allowed for the server's clock set back (or a standby's behind the old primary's) between a
follower's anchor and a later write, on both sides of the span it reads (:class:`DayBound`);
a step back further than the latest anchor is seen, and the read looks in every day."""
_INSERT: Final = """
INSERT INTO readings (partition, pts, device_id, shape, ts, received, seq, dedup, event,
                      ts_flag, payload)
SELECT partition, to_timestamp(pts), device_id, shape, ts, received, seq, dedup, event,
       ts_flag, payload
FROM journal_staging s
WHERE NOT (s.ts = s.received AND s.dedup IS NOT NULL AND (
    SELECT true FROM readings r
    WHERE r.device_id = s.device_id AND r.dedup = s.dedup AND r.ts = r.received
    LIMIT 1) IS NOT NULL)
ORDER BY device_id, ord
ON CONFLICT DO NOTHING
RETURNING device_id, ts, received, dedup
"""
"""One statement for the batch: duplicates of timed messages by the unique index, of messages
without the device's time by key alone (as the SQLite journal's partial index). Devices in one
order on every instance (two instances given the same messages wait for each other's keys in
the same order rather than deadlock), each device's in arrival order. (A batch whose readings
lie far from the server's clock is recorded in ``journal_outliers`` by the table's trigger:
:class:`DayBound`.)

The repeat check is a scalar subquery, one probe of ``readings_untimed`` for each untimed row
staged, and not ``EXISTS``: PostgreSQL may turn an ``EXISTS`` into a hashed subplan, which reads
every untimed row of the journal into a hash table at each batch, and it chose that for the
plan the writer keeps for its connection's life when that plan was made on a young journal
(bench.fall_path at 5,000 msg/s: 10.4 ms a batch of 30 after ten seconds, and growing; 0.32 ms
this way). tests/integration/test_journal_pg.py holds a plan made on an empty journal to it."""
_LOCK_KEYS: Final = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k"
"""Transaction locks on the untimed messages' keys, taken in ascending order (no deadlock)."""


def _lock_key(device_id: str, dedup: int) -> int:
    """A signed 64-bit lock key of (device, message key): a collision only makes two
    transactions wait for each other."""
    digest = hashlib.blake2b(f"{device_id}\0{dedup}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_INSERT_DEAD: Final = (
    "INSERT INTO dead_letters (received, topic, reason, detail, payload)"
    " VALUES (%s, %s, %s, %s, %s)"
)
_TOUCH_DEVICE: Final = """
INSERT INTO devices (device_id, kind, community, first_seen, last_seen, battery)
SELECT d, k, c, t, t, b
FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[]) AS s(d, k, c, t, b)
ON CONFLICT (device_id) DO UPDATE SET
    last_seen = greatest(coalesce(devices.last_seen, 0), excluded.last_seen),
    first_seen = coalesce(devices.first_seen, excluded.first_seen),
    community = coalesce(devices.community, excluded.community),
    battery = coalesce(excluded.battery, devices.battery)
"""
_SET_STATE: Final = """
UPDATE devices SET online = %s, state_since = %s, fw = coalesce(%s, fw)
WHERE device_id = %s AND (state_since IS NULL OR state_since <= %s)
"""
_SYNC: Final = """
INSERT INTO devices (device_id, kind, community, compound, building, unit, floor, room,
                     resident_id, name, registered)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true)
ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind, community = excluded.community,
    compound = excluded.compound, building = excluded.building, unit = excluded.unit,
    floor = excluded.floor, room = excluded.room, resident_id = excluded.resident_id,
    name = excluded.name, registered = true
"""
_RAW: Final = "SELECT ts, received, shape, event, ts_flag, seq, payload, id FROM readings"


def store_trouble(e: BaseException) -> str | None:
    """As :func:`ingest.journal.store_trouble`, for PostgreSQL: a short name (psycopg's class
    for the SQLSTATE: ``DiskFull``, ``ReadOnlySqlTransaction``, ``AdminShutdown``,
    ``OperationalError`` for a lost connection …) when the store cannot take writes; None when
    ``e`` is about what was written (a value PostgreSQL refuses, such as text with a NUL; a
    constraint; a row past an index's size). Unknown errors count as the store's."""
    if isinstance(e, psycopg.errors.CheckViolation) and "no partition" in str(e):
        return "NoPartition"  # retried once by the write; a second time: maintenance is behind
    if isinstance(
        e, psycopg.DataError | psycopg.IntegrityError | psycopg.errors.ProgramLimitExceeded
    ):
        return None
    if isinstance(e, psycopg.Error):
        return type(e).__name__
    if isinstance(e, OverflowError | TypeError | ValueError):  # binding a value
        return None
    return type(e).__name__


_F = TypeVar("_F", bound=Callable[..., Any])

Counted = Literal["partitions_made", "pts_fallbacks", "partition_retries", "deadlock_retries"]
"""What :attr:`PgJournal.counters` counts."""
_METRICS: Final[dict[Counted, Counter]] = {
    "partitions_made": PARTITIONS_MADE,
    "pts_fallbacks": PTS_FALLBACKS,
    "partition_retries": PARTITION_RETRIES,
    "deadlock_retries": DEADLOCK_RETRIES,
}
"""Each count's counter on ``/metrics``: the process's, every journal it opened summed (the
ingest processes' added into the main process's: jiayuan/ingest_procs.py ``FORWARDED``)."""


def _serialised(method: _F) -> _F:
    """The method holds the journal's writer lock (one thread on the writer's connection)."""

    @functools.wraps(method)
    def run(self: PgJournal, *args: Any, **kwargs: Any) -> Any:
        with self._writing:
            return method(self, *args, **kwargs)

    return cast(_F, run)


def _day(t: float) -> int:
    return math.floor(t / DAY) * DAY


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class PgJournal:
    """The journal in PostgreSQL at ``url``: migrated and its partitions made ahead when
    opened. ``pool``: the instance's pool for reads (one of its own otherwise);
    ``partitions``: the installation's number of device partitions (district.partitions)."""

    def __init__(
        self,
        url: str,
        *,
        pool: ConnectionPool | None = None,
        partitions: int = DEFAULT_PARTITIONS,
        ahead_days: int = AHEAD_DAYS,
        seen_max: int = SEEN_MAX,
        name: str = "jiayuan-journal",
    ) -> None:
        self.url = url
        self.name = name
        self.partitions = partitions
        self._own_pool = pool is None
        if pool is None:
            pool = open_pool(url, name=name)  # migrates
        else:
            with connect(url, name=name) as db:
                migrate(db)
        self._pool = pool
        self._w: Connection | None = None
        self._writing = threading.RLock()
        """Held around every use of the writer's connection: the pipeline writes on it, and
        a registry change (the API's thread) or the maintenance job may come at any time."""
        self._days: set[int] = set()
        self._floor = -math.inf
        self._counts: dict[str, int] = dict.fromkeys(_METRICS, 0)
        self._seen = SeenDevices(seen_max)
        self.ahead_days = ahead_days
        self.make_ahead()

    @_serialised
    def make_ahead(self) -> list[str]:
        """Make the day partitions from yesterday (decode believes a device's time up to
        ``MAX_AGE_S`` old) to ``ahead_days`` after today; returns those made. At open, and
        daily by the maintenance job (idempotent; any instance may run it)."""
        made = timeparts.ensure_ahead(
            self._writer(),
            "readings",
            "day",
            ahead=self.ahead_days + 1,
            now=_utc(time.time() - MAX_AGE_S),
        )
        self._refresh()
        return made

    @property
    def counters(self) -> dict[str, int]:
        """What this journal did about partitions, for health (``/metrics`` has the process's
        sums: :data:`_METRICS`)."""
        return dict(self._counts)

    def _count(self, event: Counted, n: int = 1) -> None:
        """``n`` more of ``event``: this journal's count and the process's counter."""
        self._counts[event] += n
        _METRICS[event].inc(n)

    # ---------------------------------------------------------------- connections

    def _writer(self) -> Connection:
        if self._w is None or self._w.closed:
            self._w = connect(self.url, name=self.name)
            self._w.execute(_STAGING)
            self._w.commit()
        return self._w

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One write transaction on the writer's connection; a failure of the store closes the
        connection, so the next write starts on a new one."""
        db = self._writer()
        try:
            with db.transaction():
                yield db
        except BaseException as e:
            if store_trouble(e) is not None:
                with contextlib.suppress(Exception):
                    db.close()
                self._w = None
            raise

    def close(self) -> None:
        try:
            self.flush()
        except Exception as e:  # the store failing at shutdown: last-seen times are lost only
            if store_trouble(e) is None:
                raise
        if self._w is not None:
            self._w.close()
            self._w = None
        if self._own_pool:
            self._pool.close()

    def trouble(self, e: BaseException) -> str | None:
        return store_trouble(e)

    # ---------------------------------------------------------------- partitions

    def _refresh(self) -> None:
        """The day partitions that exist and retention's floor, as the database has them."""
        db = self._writer()
        with db.transaction():
            have = timeparts.partitions(db, "readings", "day")
            row = db.execute("SELECT extract(epoch FROM floor) FROM journal_retention").fetchone()
        self._days = {int(start.timestamp()) for start in have.values()}
        self._floor = float(row[0]) if row else -math.inf

    def _make_day(self, day: int) -> None:
        db = self._writer()
        try:
            made = timeparts.ensure_ahead(db, "readings", "day", ahead=0, now=_utc(day))
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            made = []  # another instance made it at the same moment
        self._count("partitions_made", len(made))
        if made:
            log.info("journal: made the partition for %s", _utc(day).date())

    def _pts(self, readings: Sequence[Reading]) -> tuple[list[float], list[int]]:
        """Each reading's partition time, its day's partition made when it has none: its
        ``ts``, or its receive time where that ``ts`` is not believed or its day was dropped;
        and the indexes of those fallbacks (counted once the readings are stored,
        :meth:`_write`; nearly always none)."""
        pts: list[float] = []
        fell: list[int] = []
        for r in readings:
            if r.received - MAX_AGE_S <= r.ts <= r.received + MAX_FUTURE_S:
                pts.append(r.ts)
            else:
                fell.append(len(pts))
                pts.append(r.received)
        if not {_day(p) for p in pts} <= self._days:
            self._refresh()
            for i, p in enumerate(pts):
                if _day(p) + DAY <= self._floor and p != readings[i].received:
                    pts[i] = readings[i].received
                    fell.append(i)
            for day in sorted({_day(p) for p in pts} - self._days):
                self._make_day(day)
            self._refresh()
        return pts, fell

    # ---------------------------------------------------------------- writes (one thread)

    @_serialised
    def write_batch(self, readings: Sequence[Reading], dead: Sequence[DeadLetter]) -> BatchResult:
        """Journal one batch in one transaction. Returns once it is committed."""
        t0 = time.perf_counter()
        try:
            new = self._write(readings, dead)
        except psycopg.errors.CheckViolation as e:
            if "no partition" not in str(e):
                raise
            self._count("partition_retries")  # dropped by retention meanwhile: look again
            self._refresh()
            new = self._write(readings, dead)
        except psycopg.errors.DeadlockDetected:
            # another instance wrote one device's repeats in another order: it went first
            self._count("deadlock_retries")
            new = self._write(readings, dead)
        return BatchResult(new, len(readings) - len(new), len(dead), time.perf_counter() - t0)

    def _write(self, readings: Sequence[Reading], dead: Sequence[DeadLetter]) -> list[Reading]:
        pts, fell = self._pts(readings)
        # Cut where a message without the device's time repeats a key of this part of the
        # batch: whether it is a duplicate depends on whether the earlier one was stored (not
        # when that one was a duplicate itself: a timed message whose time is its receive
        # time). Each part is one statement that sees what the parts before it stored, as the
        # SQLite journal's rows, inserted one after another, do; arrival order is kept.
        parts: list[list[tuple[Any, ...]]] = [[]]
        untimed: set[tuple[str, int]] = set()
        part_keys: set[tuple[str, int]] = set()
        for i, r in enumerate(readings):
            key = dedup_key(r)
            if r.ts == r.received and key is not None:
                if (r.device_id, key) in part_keys:
                    parts.append([])
                    part_keys.clear()
                part_keys.add((r.device_id, key))
                untimed.add((r.device_id, key))
            shape = SHAPES[r.kind, r.stream]
            payload = rowcodec.dump(r.payload, r.ts, r.ts_flag, r.seq)
            if isinstance(payload, str):
                payload, shape = payload.encode(), shape + JSON_PAYLOAD
            parts[-1].append(
                (
                    i,
                    partition_of(r.device_id, self.partitions),
                    pts[i],
                    r.device_id,
                    shape,
                    r.ts,
                    r.received,
                    r.seq,
                    key,
                    r.event,
                    r.ts_flag,
                    payload,
                )
            )
        states = device_states(readings)  # by device: one order on every instance, no deadlock
        self._seen.note(readings)
        fell_back = 0
        with self._tx() as db, db.cursor() as cur:
            new: list[Reading] = []
            if untimed:
                # the repeat check of untimed messages reads rows another transaction may be
                # writing at this moment (a zombie instance and the survivor that resumed its
                # session): one transaction at a time per key, the next reads the first's row
                cur.execute(_LOCK_KEYS, (sorted({_lock_key(d, k) for d, k in untimed}),))
            staged = [row for part in parts for row in part]
            if staged:
                inserted: list[Any] = []
                for n, part in enumerate(parts):
                    if n:
                        cur.execute("DELETE FROM journal_staging")
                    inserted += self._insert(cur, part)
                urgent = sorted({row[1] for row in staged if row[4] & 3})
                if urgent:  # sent as this commits (never if it rolls back)
                    notify(db, {"partitions": urgent}, URGENT_CHANNEL)
                if len(inserted) == len(readings):
                    new = list(readings)
                    fell_back = len(fell)
                else:  # some were duplicates: which, by what was inserted
                    left = collections.Counter(tuple(x) for x in inserted)
                    stored = []
                    for row in staged:
                        k = (row[3], row[5], row[6], row[8])
                        if left[k] > 0:
                            left[k] -= 1
                            stored.append(row[0])
                    new = [readings[i] for i in stored]
                    fell_back = len(set(fell).intersection(stored))
            if states:
                self._flush_seen(cur)  # so the state update finds its row
                cur.executemany(_SET_STATE, [(on, at, fw, d, at) for d, on, at, fw in states])
            elif self._seen.due():
                self._flush_seen(cur)
            if dead:
                cur.executemany(_INSERT_DEAD, dead_letter_rows(dead))
        if fell_back:  # committed: stored on their receive time's day
            self._count("pts_fallbacks", fell_back)
        return new

    @staticmethod
    def _insert(cur: psycopg.Cursor[Any], rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``rows`` through the staging table into ``readings``: what was inserted."""
        with cur.copy(_COPY) as copy:
            copy.set_types(_STAGING_TYPES)
            for row in rows:
                copy.write_row(row)
        cur.execute(_INSERT)
        return cur.fetchall()

    @_serialised
    def probe(self) -> None:
        """A write of a few bytes, committed: raises what the store raises now."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO store_probe (id, at) VALUES (1, %s)"
                " ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                (time.time(),),
            )

    @property
    def pending_devices(self) -> int:
        """Devices whose last-seen time waits in memory for the next write."""
        return len(self._seen)

    def _flush_seen(self, cur: psycopg.Cursor[Any]) -> None:
        """Write the last-seen times that wait (:class:`ingest.seen.SeenDevices`): one
        statement, every device in one order (no deadlock with another instance)."""
        touched = self._seen.take()
        if touched:
            cur.execute(_TOUCH_DEVICE, [list(c) for c in zip(*touched, strict=True)])

    @_serialised
    def flush(self, *, if_due: bool = False) -> bool:
        """Write pending last-seen times. Returns whether it wrote."""
        if not self._seen.waiting(if_due=if_due):
            return False
        with self._tx() as db, db.cursor() as cur:
            self._flush_seen(cur)
        return True

    @_serialised
    def sync_registry(self, registry: Registry) -> int:
        """Write each registered device's placement; devices no longer registered keep their
        history and state but are shown as unregistered."""
        rows_ = sorted(
            (
                d.device_id,
                d.kind,
                registry.community_of(d.device_id) or registry.community,  # communities
                d.compound,
                d.building,
                d.unit,
                d.floor,
                d.room,
                d.resident_id,
                d.name,
            )
            for d in registry.devices.values()
        )
        with self._tx() as db, db.cursor() as cur:
            cur.execute("UPDATE devices SET registered = false WHERE registered")
            cur.executemany(_SYNC, rows_)
        return len(rows_)

    def prune(
        self,
        before: float,
        chunk: int = 5000,
        *,
        keep_after: int | None = None,
        pause_s: float = 0.02,
        forget_idle_s: float = FORGET_IDLE_S,
    ) -> int:
        """Drop the day partitions of readings that end at or before ``before`` (whole days:
        a day that ``before`` cuts stays until the next prune after its end), and forget
        devices never registered and silent for ``forget_idle_s``. Returns the readings
        dropped. ``keep_after``: a partition holding a row with a greater id is kept, and so
        is every later one. ``chunk`` and ``pause_s`` are the SQLite journal's (its deletes
        go in pieces); a drop here is one short lock on the table."""
        del chunk, pause_s
        # a connection of its own: retention runs on the scheduler's thread, and the writer's
        # connection belongs to the pipeline's (a transaction there may be open right now)
        with connect(self.url, name=self.name, autocommit=True) as db:
            db.execute(
                "DELETE FROM devices WHERE NOT registered AND compound IS NULL"
                " AND building IS NULL AND coalesce(last_seen, 0) < %s",
                (time.time() - forget_idle_s,),
            )
            cutoff = _utc(before)
            doomed: list[tuple[str, datetime]] = []
            for name, start in timeparts.partitions(db, "readings", "day").items():
                if start.timestamp() + DAY > before:
                    break
                if keep_after is not None:
                    top = db.execute(
                        sql.SQL("SELECT max(id) FROM {}").format(sql.Identifier(name))
                    ).fetchone()
                    if top and top[0] is not None and int(top[0]) > keep_after:
                        break
                doomed.append((name, start))
            if not doomed:
                return 0
            cutoff = _utc(doomed[-1][1].timestamp() + DAY)
            total = 0
            for name, _ in doomed:
                n = db.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
                ).fetchone()
                total += int(n[0]) if n else 0
            # the floor first: a writer that looks after this never makes these days again
            db.execute(
                "INSERT INTO journal_retention (id, floor) VALUES (1, %s) ON CONFLICT (id)"
                " DO UPDATE SET floor = greatest(journal_retention.floor, excluded.floor)",
                (cutoff,),
            )
            timeparts.drop_before(db, "readings", "day", cutoff)
            # an outlier's span wholly in dropped days names rows that are gone
            db.execute("DELETE FROM journal_outliers WHERE high < %s", (cutoff,))
        return total

    # ---------------------------------------------------------------- reads (any thread)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """A cursor giving rows as dicts, on a pooled connection (returned afterwards)."""
        with self._pool.connection() as db, db.cursor(row_factory=dict_row) as cur:
            yield cur

    def list_devices(
        self,
        *,
        kind: str | None = None,
        building: str | None = None,
        online: bool | None = None,
        registered: bool | None = None,
        among: tuple[Collection[str], Collection[str]] | None = None,
        communities: Collection[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of devices by id; ``among`` (device ids, kinds) and ``communities`` as the
        SQLite journal's."""
        conds: list[str] = []
        args: list[Any] = []
        for cond, v in (
            ("kind = %s", kind),
            ("building = %s", building),
            ("online = %s", online),
            ("registered = %s", registered),
        ):
            if v is not None:
                conds.append(cond)
                args.append(v)
        if communities is not None:
            conds.append("community = ANY(%s)")
            args.append(sorted(communities))
        if among is not None:
            conds.append("(device_id = ANY(%s) OR kind = ANY(%s))")
            args += [sorted(among[0]), sorted(among[1])]
        where = " WHERE " + " AND ".join(conds) if conds else ""
        with self._reader() as db:
            total = db.execute(f"SELECT count(*) AS n FROM devices{where}", args).fetchone()
            found = db.execute(
                f"SELECT * FROM devices{where} ORDER BY device_id LIMIT %s OFFSET %s",
                [*args, limit, offset],
            ).fetchall()
        return found, int(total["n"]) if total else 0

    def get_device(self, device_id: str) -> dict[str, Any] | None:
        with self._reader() as db:
            return db.execute("SELECT * FROM devices WHERE device_id = %s", (device_id,)).fetchone()

    def readings(
        self,
        device_id: str,
        *,
        metric: str | None = None,
        since: float | None = None,
        until: float | None = None,
        step: Step = "raw",
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """As the SQLite journal's: raw readings oldest first, or per bucket of ``step``
        (min, max, mean, count) of ``metric`` — computed here from the raw rows (there are no
        rollup tables in PostgreSQL), for a rolled-up metric over the buckets whose start lies
        in [since, until) as the SQLite journal's rollups answer, else over readings in it."""
        since = since if since is not None else 0.0
        until = until if until is not None else 1e12
        if step == "raw":
            with self._reader() as db:
                found = _by_time(db, device_id, since, until, limit=limit).fetchall()
            out = []
            for r in found:
                item = _raw(r, _stored(r), metric)
                if item is not None:
                    out.append(item)
            return out
        if metric is None:
            raise ValueError("step needs a metric")
        width = {"1m": 60, "1h": 3600}[step]
        if kinds_with_metric(metric):
            lo, hi = since // width * width, -(-until // width) * width
        else:
            lo, hi = since, until
        telemetry = [s for (_, stream), s in SHAPES.items() if stream == "telemetry"]
        telemetry += [s + JSON_PAYLOAD for s in telemetry]
        buckets: dict[float, list[float]] = {}
        with self._reader() as db:
            for r in _by_time(db, device_id, lo, hi, shapes=telemetry):
                body = _stored(r)
                v = body.get(metric) if isinstance(body, dict) else None
                if isinstance(v, bool):
                    v = int(v)
                if isinstance(v, int | float) and abs(v) <= MAX_NUMBER:
                    bucket = float(int(r["ts"] / width) * width)
                    if bucket not in buckets and len(buckets) == limit:
                        break
                    buckets.setdefault(bucket, []).append(v)
        return [
            {"ts": b, "min": min(vs), "max": max(vs), "mean": sum(vs) / len(vs), "count": len(vs)}
            for b, vs in sorted(buckets.items())
        ]

    def dead_letters(
        self,
        *,
        reason: str | None = None,
        since: float | None = None,
        until: float | None = None,
        communities: Collection[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """``communities``: only dead letters on those communities' topics (None: all)."""
        conds: list[str] = []
        args: list[Any] = []
        for cond, v in (
            ("reason = %s", reason),
            ("received >= %s", since),
            ("received < %s", until),
        ):
            if v is not None:
                conds.append(cond)
                args.append(v)
        if communities is not None:  # by the topic's community/<id>/ prefix
            conds.append("split_part(topic, '/', 1) = 'community'")
            conds.append("split_part(topic, '/', 2) = ANY(%s)")
            args.append(sorted(communities))
        where = " WHERE " + " AND ".join(conds) if conds else ""
        with self._reader() as db:
            total = db.execute(f"SELECT count(*) AS n FROM dead_letters{where}", args).fetchone()
            found = db.execute(
                f"SELECT * FROM dead_letters{where} ORDER BY id DESC LIMIT %s OFFSET %s",
                [*args, limit, offset],
            ).fetchall()
        return [dead_letter_item(r) for r in found], int(total["n"]) if total else 0

    def dead_letter_counts(self) -> dict[str, int]:
        with self._reader() as db:
            found = db.execute(
                "SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason"
            ).fetchall()
        return {r["reason"]: int(r["n"]) for r in found}

    def last_reading(self, device_id: str) -> dict[str, Any] | None:
        """What a device sent last (its latest by event time; of two at the same time, the one
        journaled last), as :meth:`readings` answers a raw one; None when it has none."""
        with self._reader() as db:
            r = db.execute(
                f"{_RAW} WHERE device_id = %s ORDER BY pts DESC, ts DESC, id DESC LIMIT 1",
                (device_id,),
            ).fetchone()
        return None if r is None else _raw(r, _stored(r))

    def hourly_means(
        self, metric: str, since: float, until: float, device_id: str | None = None
    ) -> list[tuple[str, float, float]]:
        """(device, hour bucket, mean of ``metric``) over telemetry with ``ts`` in [since,
        until): what the SQLite journal's hourly rollups hold, for the personal baselines
        (rules/baselines.py). Computed here from the raw rows (streamed through a server-side
        cursor), as there are no rollups on PostgreSQL: a full read of those days, hourly."""
        telemetry = [s for (_, stream), s in SHAPES.items() if stream == "telemetry"]
        telemetry += [s + JSON_PAYLOAD for s in telemetry]
        query = (
            "SELECT device_id, ts, shape, seq, payload FROM readings"
            " WHERE shape = ANY(%(shapes)s) AND pts >= to_timestamp(%(lo)s)"
            " AND pts < to_timestamp(%(hi)s) AND ts >= %(lo)s AND ts < %(hi)s"
        )
        if device_id is not None:
            query += " AND device_id = %(d)s"
        sums: dict[tuple[str, float], list[float]] = {}
        args = {"shapes": telemetry, "lo": since, "hi": until, "d": device_id}
        with (
            self._pool.connection() as db,
            db.transaction(),
            db.cursor(name="jiayuan_hourly_means", row_factory=dict_row) as cur,
        ):
            cur.execute(query, args)
            for r in cur:
                body = _stored(r)
                v = body.get(metric) if isinstance(body, dict) else None
                if isinstance(v, bool):
                    v = int(v)
                if isinstance(v, int | float) and abs(v) <= MAX_NUMBER:
                    acc = sums.setdefault(
                        (r["device_id"], float(int(r["ts"] // 3600) * 3600)), [0.0, 0]
                    )
                    acc[0] += v
                    acc[1] += 1
        return [(d, b, total / n) for (d, b), (total, n) in sums.items()]

    def count_readings(self, device_id: str | None = None) -> int:
        with self._reader() as db:
            if device_id is None:
                row = db.execute("SELECT count(*) AS n FROM readings").fetchone()
            else:
                row = db.execute(
                    "SELECT count(*) AS n FROM readings WHERE device_id = %s", (device_id,)
                ).fetchone()
        return int(row["n"]) if row else 0


def _by_time(
    db: psycopg.Cursor[dict[str, Any]],
    device_id: str,
    since: float,
    until: float,
    *,
    shapes: list[int] | None = None,
    limit: int | None = None,
) -> psycopg.Cursor[dict[str, Any]]:
    """A device's rows with ``ts`` in [since, until), by ``ts``: those on their own day through
    the partitions of that range, and the few stored on their receive time
    (``readings_moved``)."""
    shape = " AND shape = ANY(%(shapes)s)" if shapes is not None else ""
    in_range = "device_id = %(d)s AND ts >= %(lo)s AND ts < %(hi)s" + shape
    return db.execute(
        f"({_RAW} WHERE {in_range} AND pts = to_timestamp(ts)"
        " AND pts >= to_timestamp(%(lo)s) AND pts < to_timestamp(%(hi)s))"
        f" UNION ALL ({_RAW} WHERE {in_range} AND pts <> to_timestamp(ts))"
        " ORDER BY ts, id LIMIT %(limit)s",
        {"d": device_id, "lo": since, "hi": until, "shapes": shapes, "limit": limit},
    )


def _stored(r: dict[str, Any]) -> Any:
    """A row's payload as the device sent it."""
    if r["shape"] & JSON_PAYLOAD:
        return _body(bytes(r["payload"]).decode())
    return rowcodec.load(bytes(r["payload"]), r["ts"], r["seq"])


def _raw(r: dict[str, Any], body: Any, metric: str | None = None) -> dict[str, Any] | None:
    """:func:`ingest.journal_store.raw_item` of a row of :data:`_RAW`."""
    return raw_item(r, _NAMES[r["shape"] & ~JSON_PAYLOAD][1], body, metric)


# -------------------------------------------------------------------- followers


FOLLOW_COLUMNS: Final = (
    "device_id",
    "shape",
    "ts",
    "received",
    "seq",
    "event",
    "ts_flag",
    "payload",
)


def rows_after(
    db: psycopg.Connection[Any], partition: int, after: follow.Position, limit: int = 500
) -> list[tuple[follow.Position, rows.Row]]:
    """Up to ``limit`` journal rows of ``partition`` after ``after`` in log order
    (:func:`district.follow.next_batch`: none behind a transaction still open), each as the
    row the SQLite journal gives its followers (:data:`ingest.rows.Row`: what
    ``rows.to_reading`` and the rules' ``FastRows`` take), with its position."""
    out = []
    for pos, (device_id, shape, ts, received, seq, event, ts_flag, payload) in follow.next_batch(
        db, "readings", after, partitions=[partition], columns=FOLLOW_COLUMNS, limit=limit
    ):
        kind, stream = _NAMES[shape & ~JSON_PAYLOAD]
        stored: bytes | str = bytes(payload).decode() if shape & JSON_PAYLOAD else bytes(payload)
        out.append(
            (pos, (pos.id, device_id, kind, stream, ts, received, seq, event, ts_flag, stored))
        )
    return out


_DAYS: Final = f"""
WITH n AS (SELECT clock_timestamp() AS now),
b AS (SELECT now, %(bounded)s AND now >= to_timestamp(%(latest)s) AS bounded FROM n),
o AS (
    SELECT CASE WHEN b.bounded THEN least(to_timestamp(%(floor)s), j.low)
                ELSE '-infinity' END AS lo,
           CASE WHEN b.bounded
                THEN greatest(b.now + interval '{EARLY_S + STEP_S:.0f} seconds', j.high)
                ELSE 'infinity' END AS hi
    FROM b, (SELECT min(low) AS low, max(high) AS high FROM journal_outliers
             WHERE xid >= %(since)s::text::xid8) AS j
)"""
"""The span of ``pts`` a follower's read looks in (:class:`DayBound`): from its floor to
:data:`EARLY_S` and an hour (:data:`STEP_S`) past the server's clock, widened to the
spans ``journal_outliers`` records of the transactions from a given id on; every day when
there is no floor, or when the server's clock is earlier than the follower's latest anchor
(set back since). In the statement that reads the rows, so in their snapshot: a transaction's
rows and its outlier row are seen together or not at all."""
_EACH: Final = (
    _DAYS
    + """
SELECT c.p, x.xid, x.id, x.device_id, x.shape, x.ts, x.received, x.seq, x.event, x.ts_flag,
       x.payload
FROM o
CROSS JOIN unnest(%(parts)s::smallint[], %(xids)s::text[], %(ids)s::bigint[]) AS c(p, xid, id)
CROSS JOIN LATERAL (
    SELECT r.xid::text::bigint AS xid, r.id, r.device_id, r.shape, r.ts, r.received, r.seq,
           r.event, r.ts_flag, r.payload
    FROM readings r
    WHERE r.partition = c.p AND (r.xid, r.id) > (c.xid::xid8, c.id)
      AND r.xid < pg_snapshot_xmin(pg_current_snapshot())
      AND r.pts >= o.lo AND r.pts <= o.hi
    ORDER BY r.xid, r.id LIMIT %(limit)s
) AS x
UNION ALL
SELECT -1, pg_snapshot_xmin(pg_current_snapshot())::text::bigint, NULL, NULL, NULL,
       extract(epoch FROM n.now)::float8, NULL, NULL, NULL, NULL, NULL
FROM n
"""
)
""":func:`rows_after` for many partitions in one round trip: each partition's rows after its own
position (its index range of ``readings_follow``), the same horizon for all (one statement, one
snapshot), only in the day partitions between ``lo`` and ``hi`` (:class:`DayBound`: PostgreSQL
skips the others as it runs). Its rows (and :data:`_BEFORE`'s) come in binary: the payload not
hex-encoded by the server and decoded again here (200,000 rows read 50 a partition at a time,
the reader's CPU 3.1-3.2 µs a row against 3.7-3.8 in text). Last, one row of partition -1: the
statement's horizon and the server's clock, for :class:`DayBound`."""
_ANCHOR: Final = (
    "SELECT pg_current_xact_id()::text::bigint, extract(epoch FROM transaction_timestamp())::float8"
)
"""The transaction's id and its start: every transaction id after it was taken later."""


def _decoded(
    p: int, xid: int, id_: int, found: tuple[Any, ...]
) -> tuple[int, follow.Position, rows.Row]:
    """(partition, position, row) of a row read as ``device_id, shape, ts, received, seq,
    event, ts_flag, payload``."""
    device_id, shape, ts, received, seq, event, ts_flag, payload = found
    kind, stream = _NAMES[shape & ~JSON_PAYLOAD]
    stored: bytes | str = bytes(payload).decode() if shape & JSON_PAYLOAD else bytes(payload)
    pos = follow.Position(int(xid), int(id_))
    return (
        int(p),
        pos,
        (pos.id, device_id, kind, stream, ts, received, seq, event, ts_flag, stored),
    )


def _numbers(values: Iterable[int]) -> str:
    """Integers as an array literal (``{1,2,3}``), cast by the statement: one text parameter
    rather than a list psycopg dumps element by element. For :func:`rows_after_each`'s
    positions and :func:`urgent_ahead`'s partitions, sent at every read of the rules worker:
    the lists took ~120 µs more of client CPU a read with 64 partitions' three arrays
    (286-302 against 167-181 µs an execute, a script timing 3,000 of them)."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


class DayBound:
    """Which day partitions a follower's next read must look in: those from :meth:`floor` on,
    before which no unread row of its partitions can lie (the read adds ``journal_outliers``'
    spans, and puts the top at :data:`EARLY_S` and an hour past its own moment).

    The journal is partitioned by day on ``pts``, and a follower reads each of its partitions'
    rows in ``(xid, id)`` order from every day partition's ``readings_follow`` index: keeping
    40 days (48 partitions with those made ahead), a read of ~50 rows took 2.9-3.3 ms against
    ~0.9 with one (``python -m bench.follower_days``). Yet a row lies within :data:`LATE_S`
    before the server's clock as its statement ends, or its span is in ``journal_outliers``
    (the trigger of migration 0014, on every statement that writes ``readings``), and that
    moment comes after its transaction took its id. So:

    - the follower's own committing transaction (:meth:`JournalFollower.save`) notes its id
      and its start once a second (:meth:`anchor`): every id after it was taken later. (Not a
      snapshot's ``xmax``: that is one past the newest *completed* transaction, and a
      transaction may have taken a greater id, and written, long before.);
    - each read returns its horizon: a partition that gave fewer rows than the limit has every
      row below it read (:attr:`read_to`); else its cursor is where its unread rows begin;
    - :meth:`since` is the lowest transaction id an unread row may have, over the partitions;
      the latest anchor below it began before any of those took their ids, and :meth:`floor` is
      its start less :data:`LATE_S` and :data:`STEP_S`.

    Only the server's clock is compared with the server's clock. Before the first anchor the
    horizon passed (a start, a takeover), there is no floor: every day is read; after
    :meth:`forget` (a rewind: rows read are given again), from the cursors only. A read that
    finds the server's clock earlier than the latest anchor's start (set back, or a standby
    behind) looks in every day, and the anchors are dropped.
    tests/integration/test_journal_pg_days.py holds rows written late, early and held through
    an outage to being read, and counts the day partitions a read looks in."""

    MARKS: Final = 10_000
    """Anchors remembered: fewer only lower the floor."""
    EVERY_S: Final = 1.0
    """Seconds between anchors (:meth:`due`)."""

    def __init__(self) -> None:
        self._marks: collections.deque[tuple[int, float]] = collections.deque()
        """(first id taken after it, start) of anchors, both ascending."""
        self._last = -math.inf
        self.read_to: dict[int, int] = {}
        """Per partition, a horizon below which every row of it was read."""

    def since(self, position: dict[int, follow.Position]) -> int:
        """The lowest transaction id an unread row after ``position`` may have."""
        read_to = self.read_to
        return min((max(pos.xid, read_to.get(p, 0)) for p, pos in position.items()), default=0)

    def floor(self, since: int) -> float | None:
        """Where the day partitions that may hold unread rows begin (epoch seconds), or None:
        all of them."""
        marks = self._marks
        while len(marks) > 1 and marks[1][0] <= since:
            marks.popleft()  # a later anchor is also below them
        if marks and marks[0][0] <= since:
            return marks[0][1] - LATE_S - STEP_S
        return None

    def latest(self) -> float:
        """The latest anchor's start (``-inf``: none)."""
        return self._marks[-1][1] if self._marks else -math.inf

    def read(self, horizon: int, now: float, done: Iterable[int]) -> None:
        """A read with ``horizon`` at ``now`` (the server's clock) gave every row below the
        horizon of the partitions ``done`` (fewer rows than its limit)."""
        for p in done:
            self.read_to[p] = horizon
        if now < self.latest():
            self._marks.clear()  # the clock was set back: anchors taken anew

    def due(self) -> bool:
        """Whether :meth:`anchor` is due."""
        return time.monotonic() - self._last >= self.EVERY_S

    def anchor(self, xid: int, start: float) -> None:
        """A transaction that began at ``start`` (the server's clock) took ``xid``."""
        self._last = time.monotonic()
        marks = self._marks
        if not marks or (xid + 1 > marks[-1][0] and start >= marks[-1][1]):
            marks.append((xid + 1, start))
            if len(marks) > self.MARKS:
                marks.popleft()

    def forget(self) -> None:
        """Rows read are given again (:meth:`JournalFollower.rewind`): from the cursors, no
        longer from what was read."""
        self.read_to.clear()


def _days(after: dict[int, follow.Position], bound: DayBound | None) -> dict[str, Any]:
    """:data:`_DAYS`' parameters for a read after ``after``: whether it is bounded, the floor,
    the latest anchor's start, and the first transaction id whose outlier spans count."""
    since = bound.since(after) if bound is not None else 0
    floor = bound.floor(since) if bound is not None else None
    return {
        "bounded": floor is not None,
        "floor": -math.inf if floor is None else floor,
        "latest": -math.inf if bound is None else bound.latest(),
        "since": str(since),
    }


def each_params(
    after: dict[int, follow.Position], limit: int, bound: DayBound | None
) -> dict[str, Any]:
    """:data:`_EACH`'s parameters for a read after ``after`` (the span of days from ``bound``;
    none: every day)."""
    return {
        **_days(after, bound),
        "parts": _numbers(after),
        "xids": _numbers(after[p].xid for p in after),
        "ids": _numbers(after[p].id for p in after),
        "limit": limit,
    }


def rows_after_each(
    db: psycopg.Connection[Any],
    after: dict[int, follow.Position],
    limit: int = 500,
    bound: DayBound | None = None,
) -> list[tuple[int, follow.Position, rows.Row]]:
    """What :func:`rows_after` gives for each partition of ``after``, in one statement: (partition,
    position, row), each partition's in log order; with ``bound``, only from the day partitions
    it leaves (and what the read learnt given to it)."""
    parts = list(after)
    found = db.execute(_EACH, each_params(after, limit, bound), binary=True).fetchall()
    at = len(found) - 1  # (the last but for an Append that ran its parts in another order)
    while found[at][0] != -1:
        at -= 1
    mark = found.pop(at)
    out = [_decoded(r[0], r[1], r[2], tuple(r[3:])) for r in found]
    if bound is not None:
        counts = collections.Counter(p for p, _, _ in out)
        bound.read(int(mark[1]), float(mark[5]), (p for p in parts if counts[p] < limit))
    return out


_URGENT: Final = (
    _DAYS
    + """
SELECT r.partition, r.xid::text::bigint, r.id, r.device_id FROM readings r
WHERE r.shape & 3 <> 0 AND r.xid >= pg_snapshot_xmin(pg_current_snapshot())
  AND r.partition = ANY(%(parts)s::smallint[]) AND r.id <> ALL(%(given)s::bigint[])
  AND r.pts >= (SELECT lo FROM o) AND r.pts <= (SELECT hi FROM o)
ORDER BY r.xid, r.id LIMIT %(limit)s
"""
)
"""The committed urgent rows (events, statuses) above the horizon: those
:func:`rows_after_each` does not give yet (the partial index ``readings_urgent``), but those
already given (by id: ids are unique in the journal, so a limit is never spent on them); in
the day partitions :class:`DayBound` leaves (keeping 40 days, 0.48-0.56 against 0.65-0.96 ms a
look over every day: ``python -m bench.follower_days``)."""
_BEFORE: Final = """
SELECT q.p, x.xid, x.id, x.device_id, x.shape, x.ts, x.received, x.seq, x.event, x.ts_flag,
       x.payload
FROM unnest(%s::smallint[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::bigint[])
    AS q(p, device_id, axid, aid, bxid, bid)
CROSS JOIN LATERAL (
    SELECT r.xid::text::bigint AS xid, r.id, r.device_id, r.shape, r.ts, r.received, r.seq,
           r.event, r.ts_flag, r.payload
    FROM readings r
    WHERE r.partition = q.p AND (r.xid, r.id) > (q.axid::xid8, q.aid)
      AND (r.xid, r.id) <= (q.bxid::xid8, q.bid) AND r.device_id = q.device_id
    ORDER BY r.xid, r.id
) AS x
"""
"""Each device's committed rows after its partition's position up to its last urgent row, in log
order: what it had before the urgent row is evaluated before it."""


def urgent_ahead(
    db: psycopg.Connection[Any],
    after: dict[int, follow.Position],
    skip: dict[int, set[follow.Position]],
    limit: int = 500,
    bound: DayBound | None = None,
) -> list[tuple[int, follow.Position, rows.Row]]:
    """The urgent rows committed after each partition's position in ``after`` whose
    transactions are not all below the horizon yet (rows :func:`rows_after_each` holds back),
    none of ``skip``; each preceded by its device's committed rows after that position (so a
    device's rows read ahead are in its log order): (partition, position, row), each device's
    in log order. Empty, in one cheap statement, when there are none. ``bound``: the urgent
    rows looked for in its day partitions only (:data:`_DAYS`)."""
    if not after:
        return []
    last: dict[tuple[int, str], follow.Position] = {}
    given = _numbers(x.id for s in skip.values() for x in s)
    look = {**_days(after, bound), "parts": _numbers(after), "given": given, "limit": limit}
    for p, xid, id_, device_id in db.execute(_URGENT, look):
        pos = follow.Position(int(xid), int(id_))
        p = int(p)
        if p in after and pos > after[p] and pos not in skip.get(p, ()):
            last[p, device_id] = max(last.get((p, device_id), pos), pos)
    if not last:
        return []
    keys = list(last)
    found = db.execute(
        _BEFORE,
        (
            [p for p, _ in keys],
            [d for _, d in keys],
            [str(after[p].xid) for p, _ in keys],
            [after[p].id for p, _ in keys],
            [str(last[k].xid) for k in keys],
            [last[k].id for k in keys],
        ),
        binary=True,
    )
    out = [_decoded(r[0], r[1], r[2], tuple(r[3:])) for r in found]
    return [(p, pos, row) for p, pos, row in out if pos not in skip.get(p, ())]


class JournalFollower:
    """A follower of the journal over the partitions it holds: :meth:`next_rows` gives the rows
    after each partition's cursor, :meth:`save` commits the cursors in the caller's transaction
    (after ``district.leases.fence``, with the effects of the rows), and what was given is
    given again after :meth:`rewind` (a failed commit) or to the next holder.

    ``ahead`` (the rules worker): :meth:`next_rows` also gives the urgent rows committed above
    the horizon (:func:`urgent_ahead`), at once rather than once every older transaction in
    the cluster has ended; :meth:`save` records them (``follower_ahead``) with the cursors, the
    ordered read skips them when it reaches them, and they are forgotten once the cursor has
    passed them. Each row is given once either way, also across a restart or a takeover."""

    def __init__(
        self,
        db: psycopg.Connection[Any],
        name: str,
        partitions: Iterable[int],
        *,
        ahead: bool = False,
    ) -> None:
        self.name = name
        self.committed = {p: follow.load_cursor(db, name, p) for p in partitions}
        self.position = dict(self.committed)
        """Where each partition has been read to (committed or not)."""
        self.ahead = ahead
        self.committed_ahead: dict[int, set[follow.Position]] = (
            follow.load_ahead(db, name, list(self.committed)) if ahead else {}
        )
        """Rows after each partition's committed cursor already evaluated (committed)."""
        self.read_ahead = {p: set(s) for p, s in self.committed_ahead.items()}
        """Rows after each partition's position given already (committed or not)."""
        self.full = False
        """The last :meth:`next_rows` found ``limit`` rows in a partition: more may follow."""
        self.days = DayBound()
        """Which day partitions the next read looks in."""

    @property
    def dirty(self) -> bool:
        """Rows were given since the last :meth:`saved`."""
        return self.position != self.committed or self.read_ahead != self.committed_ahead

    def next_rows(
        self, db: psycopg.Connection[Any], limit: int = 500, *, ahead: bool = True
    ) -> list[tuple[int, rows.Row]]:
        """Up to ``limit`` rows per partition, each with its partition; every partition's in
        log order (devices never span partitions, so that is every device's order). With
        ``self.ahead`` (and ``ahead`` not False), first the urgent rows committed above the
        horizon, each device's in log order: when there are any, they alone (``full``: the
        ordered read follows at once), so a fall is evaluated and committed without waiting
        for the ordered batch."""
        skip = self.read_ahead
        if self.ahead and ahead:
            early = urgent_ahead(db, self.position, skip, bound=self.days)
            if early:
                for p, pos, _row in early:
                    skip.setdefault(p, set()).add(pos)
                self.full = True
                return [(p, row) for p, _pos, row in early]
        out: list[tuple[follow.Position, int, rows.Row]] = []
        counts: dict[int, int] = {}
        for p, pos, row in rows_after_each(db, self.position, limit, self.days):
            self.position[p] = max(self.position[p], pos)
            counts[p] = counts.get(p, 0) + 1
            if skip and pos in skip.get(p, ()):
                continue  # evaluated ahead already
            out.append((pos, p, row))
        self.full = any(n >= limit for n in counts.values())
        out.sort(key=lambda x: x[0])
        return [(p, row) for _, p, row in out]

    def save(self, db: psycopg.Connection[Any]) -> None:
        """Write the cursors read to, in ``db``'s transaction; call :meth:`saved` once that
        transaction committed, :meth:`rewind` if it did not."""
        moved = {p: pos for p, pos in self.position.items() if pos != self.committed[p]}
        follow.save_cursors(db, self.name, moved)
        if self.days.due():
            row = db.execute(_ANCHOR).fetchone()
            if row is not None:
                self.days.anchor(int(row[0]), float(row[1]))
        if self.ahead:
            added, dropped = [], []
            for p, read in self.read_ahead.items():
                done = self.committed_ahead.get(p, set())
                at = self.position[p]
                added += [(p, x) for x in read - done if x > at]
                dropped += [(p, x) for x in done if x <= at]
            follow.save_ahead(db, self.name, added, dropped)

    def saved(self) -> None:
        """The transaction of :meth:`save` committed."""
        self.committed = dict(self.position)
        if self.ahead:
            self.read_ahead = {
                p: {x for x in read if x > self.position[p]} for p, read in self.read_ahead.items()
            }
            self.committed_ahead = {p: set(s) for p, s in self.read_ahead.items()}

    def rewind(self) -> None:
        """Read again from the last committed cursors."""
        self.position = dict(self.committed)
        self.days.forget()
        self.read_ahead = {p: set(s) for p, s in self.committed_ahead.items()}

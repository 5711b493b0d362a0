"""The journal: SQLite in WAL mode under the data directory.

It holds every accepted reading (the embedded time-series store), every dead letter, and each
device's state (registry placement, last seen, online). Writes come from one ingest thread in
batches, one transaction each; the listener acknowledges a batch's messages to the broker only
after :meth:`Journal.write_batch` has returned. Reads (the API) use their own connections.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from base.sqlite import Writer, connect, transaction
from ingest import rollups, rowcodec
from ingest.follower import CURSOR_SCHEMA, write_lock
from ingest.journal_store import BatchResult as BatchResult
from ingest.journal_store import Step as Step
from ingest.journal_store import dead_letter_item, dead_letter_rows, raw_item
from ingest.payloads import MAX_NUMBER, DeadLetter, Reading
from ingest.rowcodec import dump
from ingest.seen import SEEN_FLUSH_S as SEEN_FLUSH_S
from ingest.seen import SEEN_MAX as SEEN_MAX
from ingest.seen import SeenDevices, device_states
from ingest.topics import KINDS, STREAMS
from registry import Registry

log = logging.getLogger(__name__)

_KINDS: Final = ("wearable", "smoke", "gate")
_STREAMS: Final = ("telemetry", "event", "status")
"""A row's kind and stream are stored as one small integer, ``shape``: kind's index × 4 +
stream's. Only ever appended to: a stored row is read by these numbers, and a journal's
``kind`` and ``stream`` columns compute them as its schema was made (a new kind needs its table
rebuilt, as :meth:`Journal._migrate` does)."""
if set(_KINDS) != set(KINDS) or set(_STREAMS) != set(STREAMS):
    raise RuntimeError("a device kind or stream without its number in the journal's rows")
SHAPES: Final[dict[tuple[str, str], int]] = {
    (k, s): i * 4 + j for i, k in enumerate(_KINDS) for j, s in enumerate(_STREAMS)
}


def _case(expr: str, names: Sequence[str], reverse: bool = False) -> str:
    whens = " ".join(
        f"WHEN '{n}' THEN {i}" if reverse else f"WHEN {i} THEN '{n}'" for i, n in enumerate(names)
    )
    return f"CASE {expr} {whens} END"


READINGS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {{name}} (
    id        INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    shape     INTEGER NOT NULL,
    ts        REAL NOT NULL,
    received  REAL NOT NULL,
    seq       INTEGER,
    dedup     INTEGER,
    event     TEXT,
    ts_flag   TEXT,
    payload   BLOB NOT NULL,
    kind      TEXT GENERATED ALWAYS AS ({_case("shape >> 2", _KINDS)}) VIRTUAL,
    stream    TEXT GENERATED ALWAYS AS ({_case("shape & 3", _STREAMS)}) VIRTUAL
);
"""
"""Readings, as compact as their reads allow (~70 bytes a wearable's telemetry with its index,
against ~260 in text columns with two indexes): ``kind`` and ``stream`` are computed from
``shape`` when read, the payload is :mod:`ingest.rowcodec`'s (JSON text in rows written
before), ``dedup`` is :func:`dedup_key` when the key is not ``seq`` itself (nearly always it
is: then ``dedup`` is null, and the key is read as ``ifnull(dedup, seq)``)."""
READINGS_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS readings_device_ts
    ON readings (device_id, ts, ifnull(dedup, seq));
CREATE UNIQUE INDEX IF NOT EXISTS readings_dedup_untimed ON readings (device_id, ifnull(dedup, seq))
    WHERE ts = received AND ifnull(dedup, seq) IS NOT NULL;
"""
"""One index serves both the reads of a device's readings by time (the API, the rollups'
tail) and duplicates: a message with the device's own time (``ts`` differs from ``received``)
comes again with that same time, so its key is unique among its device's rows at that time.
A message without it (``ts`` is its receive time) has its key unique among those of its
device: the second, partial index, which holds only those rows (none, from devices that send
their time).

Measured and left as they are (inserts of the benchmark's telemetry, 2026-12-04, per row):
the indexes cost ~0.9 µs of the ~2 µs an insert takes; an integer device number instead of the
text id would save ~0.14 µs and 7 bytes, a plain ``dedup`` column instead of the expression
~0.12 µs — neither worth migrating every journal and every reader of its rows. Nor did a
larger ``cache_size`` or a longer ``wal_autocheckpoint`` (4,000 or 16,000 pages) lower the
writer's CPU. ``synchronous=FULL`` stays: in WAL mode NORMAL would leave a commit, and so a
PUBACK, ahead of the disk (it would save ~0.5 µs a row at 250 a batch)."""

SCHEMA = (
    READINGS_TABLE.format(name="readings")
    + READINGS_INDEXES
    + """
CREATE TABLE IF NOT EXISTS dead_letters (
    id       INTEGER PRIMARY KEY,
    received REAL NOT NULL,
    topic    TEXT NOT NULL,
    reason   TEXT NOT NULL,
    detail   TEXT NOT NULL,
    payload  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason, received);

CREATE TABLE IF NOT EXISTS devices (
    device_id   TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    community   TEXT,
    compound    TEXT,
    building    TEXT,
    unit        TEXT,
    floor       INTEGER,
    room        TEXT,
    resident_id TEXT,
    name        TEXT,
    registered  INTEGER NOT NULL DEFAULT 0,
    first_seen  REAL,
    last_seen   REAL,
    online      INTEGER,
    state_since REAL,
    fw          TEXT,
    battery     REAL
);
CREATE INDEX IF NOT EXISTS devices_building ON devices (building, kind);

CREATE TABLE IF NOT EXISTS store_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
);
"""
)

_MIGRATE_TEXT_ROWS = f"""
{READINGS_TABLE.format(name="readings_compact")}
INSERT INTO readings_compact
    (id, device_id, shape, ts, received, seq, dedup, event, ts_flag, payload)
SELECT id, device_id, ({_case("kind", _KINDS, True)}) * 4 + ({_case("stream", _STREAMS, True)}),
       ts, received, seq, nullif(dedup_int(dedup), seq), event, ts_flag, payload
FROM readings ORDER BY id;
DROP TABLE readings;
ALTER TABLE readings_compact RENAME TO readings;
"""
"""From the journal of text rows (kind, stream and the duplicate key as text, two indexes) to
compact rows: the same ids (the followers' cursors stay valid), payloads as they were, the
duplicate keys as integers."""

_OPTIONAL: Final = ("seq", "dedup", "event", "ts_flag")
"""A row's columns that are often null, each bit ``1 << i`` of an insert's column set."""


_CHUNK: Final = 32
"""Rows bound to one multi-row insert: 0.42 µs a row to bind and step against 0.68 for
``executemany`` (sqlite3 steps and resets once per statement; in memory, six columns: 0.46 at
16 rows, 0.41 at 64)."""


@functools.cache
def _insert(present: int, rows: int = 1) -> str:
    """The insert of ``rows`` rows whose null columns of :data:`_OPTIONAL` are those not in the
    bit set ``present``: left out of the statement (their default is null), not bound as None."""
    columns = ["device_id", "shape", "ts", "received", "payload"]
    columns += [c for i, c in enumerate(_OPTIONAL) if present >> i & 1]
    values = ",".join([f"({','.join('?' * len(columns))})"] * rows)
    return f"INSERT OR IGNORE INTO readings ({', '.join(columns)}) VALUES {values}"


def _insert_rows(db: sqlite3.Connection, present: int, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (all with the columns of ``present``) in their order: :data:`_CHUNK` at
    a time in one statement, the rest by ``executemany``."""
    whole = len(rows) - len(rows) % _CHUNK
    if whole:
        many = _insert(present, _CHUNK)
        for i in range(0, whole, _CHUNK):
            db.execute(many, list(itertools.chain.from_iterable(rows[i : i + _CHUNK])))
    if whole < len(rows):
        db.executemany(_insert(present), rows[whole:])


def _row_runs(readings: Sequence[Reading]) -> list[tuple[int, list[tuple[Any, ...]]]]:
    """The rows of ``readings`` as runs of consecutive rows with the same null columns, each
    with the bit set of its columns (:func:`_insert`), in arrival order (ids grow with it).

    Built for the sqlite3 module's binding: a ``None`` or a ``bytes`` parameter goes through
    its adapter lookup (a registry probe and two attribute lookups, ~0.3 µs each), an ``int``,
    ``float``, ``str`` or ``bytearray`` does not. So a payload is bound as a ``bytearray``
    (stored as the same BLOB) and a null column is left out of the statement rather than bound:
    the executemany and commit of a wearable's telemetry (``dedup``, ``event``, ``ts_flag``
    null) took 3.2 µs a row, 2.1 so; the whole of ``write_batch`` 4.9 µs, 4.0 so
    (``.venv/bin/python -m bench.journal_cpu``, ``write_us`` at batch 1000, 2026-12-04). A batch
    that alternates null columns row by row costs ~0.1 µs a row more than one statement would."""
    runs: list[tuple[int, list[tuple[Any, ...]]]] = []
    rows: list[tuple[Any, ...]] = []
    last = -1
    for r in readings:
        seq, event, flag = r.seq, r.event, r.ts_flag
        if r.key is None and seq is not None:
            dedup = None  # dedup_key(r) is seq itself
        else:
            key = dedup_key(r)
            dedup = None if key == seq else key
        payload: bytes | bytearray | str = dump(r.payload, r.ts, flag, seq)
        if payload.__class__ is bytes:
            payload = bytearray(payload)
        row: tuple[Any, ...] = (r.device_id, SHAPES[r.kind, r.stream], r.ts, r.received, payload)
        present = 0
        if seq is not None:
            row += (seq,)
            present = 1
        if dedup is not None:
            row += (dedup,)
            present |= 2
        if event is not None:
            row += (event,)
            present |= 4
        if flag is not None:
            row += (flag,)
            present |= 8
        if present != last:
            rows = []
            runs.append((present, rows))
            last = present
        rows.append(row)
    return runs


_INSERT_DEAD = (
    "INSERT INTO dead_letters (received, topic, reason, detail, payload) VALUES (?,?,?,?,?)"
)
_TOUCH_DEVICE = """
INSERT INTO devices (device_id, kind, community, first_seen, last_seen, battery)
VALUES (?1, ?2, ?3, ?4, ?4, ?5)
ON CONFLICT (device_id) DO UPDATE SET
    last_seen = max(coalesce(last_seen, 0), excluded.last_seen),
    first_seen = coalesce(first_seen, excluded.first_seen),
    community = coalesce(community, excluded.community),
    battery = coalesce(excluded.battery, battery)
"""
_SET_STATE = """
UPDATE devices SET online = ?2, state_since = ?3, fw = coalesce(?4, fw)
WHERE device_id = ?1 AND (state_since IS NULL OR state_since <= ?3)
"""

FORGET_IDLE_S = 86_400.0
"""An unregistered device silent this long is forgotten by :meth:`Journal.prune` (its row in
``devices``; its readings age out with the others)."""

_STORE_OK_CODES = frozenset(
    {
        18,  # SQLITE_TOOBIG: this row
        19,  # SQLITE_CONSTRAINT: this row
        20,  # SQLITE_MISMATCH: this row
        25,  # SQLITE_RANGE: this statement's parameters
    }
)
"""SQLite's primary result codes that are about what was written, not the store."""


def store_trouble(e: BaseException) -> str | None:
    """What is wrong with the store when ``e`` (raised by a write) says it cannot take writes at
    all — full (SQLITE_FULL), locked (SQLITE_BUSY, SQLITE_LOCKED), read-only, an I/O error,
    cannot open, corrupt or any error not known to be about the content — as a short name;
    None when ``e`` is about what was written (a value it cannot bind or keep, a constraint):
    then another batch would go through, and the message that caused it is at fault.

    Unknown errors count as the store's: that holds messages (they wait, health says why)
    rather than turn good ones into dead letters."""
    if isinstance(e, sqlite3.Error):
        code: int | None = getattr(e, "sqlite_errorcode", None)
        if code is not None:
            if code & 0xFF in _STORE_OK_CODES:
                return None
            return str(getattr(e, "sqlite_errorname", None) or f"SQLITE_{code}")
        if isinstance(
            e, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.InterfaceError
        ):  # raised while binding a value
            return None
        return type(e).__name__
    if isinstance(e, OverflowError | TypeError | ValueError):  # binding a value (incl. Unicode)
        return None
    return type(e).__name__


_STEP_S: dict[str, int] = {"1m": 60, "1h": 3600}


def dedup_key(r: Reading) -> int | None:
    """What makes a message a duplicate of one already journaled.

    ``seq`` together with the device's own ``ts`` when it sent one: a broker redelivery repeats
    both, while a wearable that rebooted and restarted its counter sends new times, so its next
    fall is never mistaken for an old message. Without ``seq``, the device's ``ts`` and the
    payload. With neither, nothing can tell a resend from a new message: no key.

    The key is an integer, unique among the device's messages at the same ``ts`` when the
    device sent its time (the journal's index on device, ``ts`` and key holds the time), among
    all its messages otherwise (``ts`` is the receive time: a second index): ``seq`` itself, or
    a negative 63-bit digest of the payload (two different payloads of one device at the same
    millisecond share it with a probability of 2^-63).

    A message that came with the source's own id (:attr:`Reading.key`, an HTTP platform's
    message id) is a duplicate exactly when that id was journaled before for the device (at
    the same ``ts`` when the device sent its time): a digest of the id, in the payload digests'
    space but never equal to one of them (it digests ``k`` and the id; a payload is a JSON
    object, never starting with ``k``).
    """
    if r.key is not None:
        source_id = b"k" + r.key.encode("utf-8", "surrogatepass")
        return _payload_key(hashlib.blake2b(source_id, digest_size=12).digest())
    if r.seq is not None:
        return r.seq
    if r.ts_flag is None and r.ts != r.received:
        return _payload_key(hashlib.blake2b(r.payload, digest_size=12).digest())
    return None


def _payload_key(digest: bytes) -> int:
    return -1 - (int.from_bytes(digest[:8], "big") & (2**63 - 1))


def _text_key(key: str | None) -> int | None:
    """A duplicate key as journals of text rows kept it (``s<seq>``, ``s<seq>@<ts>``,
    ``t<digest in hex>``) as :func:`dedup_key` makes it now."""
    if key is None:
        return None
    if key.startswith("s"):
        return int(key[1:].partition("@")[0])
    return _payload_key(bytes.fromhex(key[1:]))


class Journal:
    def __init__(
        self,
        path: Path,
        synchronous: Literal["NORMAL", "FULL"] = "FULL",
        *,
        seen_max: int = SEEN_MAX,
        max_pages: int | None = None,
        busy_timeout_s: float = 10.0,
    ) -> None:
        """``seen_max``: see :data:`SEEN_MAX`. ``max_pages``: a page limit for the writer
        (SQLite ``max_page_count``: a cap on the journal's size; none by default).
        ``busy_timeout_s``: how long a write waits for another writer's lock before the store
        counts as locked."""
        self._busy_s = busy_timeout_s
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._synchronous = synchronous
        self._max_pages = max_pages
        self._w = Writer(self._connect_writer, broken=lambda e: store_trouble(e) is not None)
        """The ingest thread's connection; opened anew after a failure of the store, so a
        connection left in a bad state (an I/O error, a file replaced) does not outlive it."""
        self._local = threading.local()
        self._write_lock = write_lock(path)
        self._migrate()
        self._w.db.executescript(SCHEMA + CURSOR_SCHEMA + rollups.SCHEMA)
        self._seen = SeenDevices(seen_max)

    def _connect(self, **pragmas: Any) -> sqlite3.Connection:
        return rowcodec.register(
            connect(
                self.path,
                synchronous=self._synchronous,
                busy_timeout_s=self._busy_s,
                any_thread=True,
                **pragmas,
            )
        )

    def _migrate(self) -> None:
        """A journal of text rows (written before compact rows) becomes one of compact rows,
        in one transaction: the rows keep their ids and payloads (JSON text, which every
        reader still takes); duplicate keys become what :func:`dedup_key` makes now."""
        db = self._w.db
        columns = {r[1] for r in db.execute("PRAGMA table_info(readings)")}
        if not columns or "shape" in columns:
            return
        db.create_function("dedup_int", 1, _text_key, deterministic=True)
        t0 = time.monotonic()
        with self._write_lock, transaction(db):
            n = db.execute("SELECT count(*) FROM readings").fetchone()[0]
            for statement in _MIGRATE_TEXT_ROWS.split(";"):
                if statement.strip():
                    db.execute(statement)
        log.info(
            "journal: %d readings moved to compact rows in %.1f s (VACUUM gives the space back)",
            n,
            time.monotonic() - t0,
        )

    def _connect_writer(self) -> sqlite3.Connection:
        return self._connect(max_page_count=self._max_pages)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer's connection, under the file's write lock. A
        failure of the store, or a rollback that failed, reopens the connection before the
        next write (:class:`base.sqlite.Writer`)."""
        with self._write_lock, self._w.tx() as db:
            yield db

    def _reader(self) -> sqlite3.Connection:
        """A connection of the calling thread's own, for queries."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect(row_factory=sqlite3.Row, query_only=True)
            self._local.db = db
        return db

    def close(self) -> None:
        try:
            self.flush()
        except Exception as e:  # the store failing at shutdown: last-seen times are lost only
            if store_trouble(e) is None:
                raise
        self._w.close()

    # ---------------------------------------------------------------- writes (ingest thread)

    def write_batch(self, readings: Sequence[Reading], dead: Sequence[DeadLetter]) -> BatchResult:
        """Journal one batch in one transaction. Returns once it is committed."""
        t0 = time.perf_counter()
        runs = _row_runs(readings)
        states = device_states(readings)
        self._seen.note(readings)
        with self._tx() as db:
            before = db.total_changes
            for present, rows in runs:
                _insert_rows(db, present, rows)
            if db.total_changes - before == len(readings):
                new = list(readings)
            else:  # some were duplicates (rare): find which, row by row, in this transaction
                new = self._new_only(readings)
            if states:
                self._flush_seen()  # so the state update finds its row
                db.executemany(_SET_STATE, [(d, int(on), at, fw) for d, on, at, fw in states])
            elif self._seen.due():
                self._flush_seen()
            if dead:
                db.executemany(_INSERT_DEAD, dead_letter_rows(dead))
        return BatchResult(new, len(readings) - len(new), len(dead), time.perf_counter() - t0)

    def trouble(self, e: BaseException) -> str | None:
        """:func:`store_trouble`: the same answer as a method, as
        :class:`ingest.journal_store.JournalStore` asks of every journal."""
        return store_trouble(e)

    def probe(self) -> None:
        """A write of a few bytes, committed: raises what the store raises now (full, locked,
        read-only...). For telling, with no message to write, whether it takes writes again."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO store_probe (id, at) VALUES (1, ?1)"
                " ON CONFLICT (id) DO UPDATE SET at = ?1",
                (time.time(),),
            )

    def _new_only(self, readings: Sequence[Reading]) -> list[Reading]:
        """Which readings the inserts wrote: a row whose key was already there was ignored, so
        the stored row with its key (``ifnull(dedup, seq)``, which is :func:`dedup_key`) has
        another receive time."""
        new: list[Reading] = []
        for r in readings:
            key = dedup_key(r)
            if (
                key is None
                or self._w.db.execute(
                    "SELECT 1 FROM readings"
                    " WHERE device_id = ? AND ts = ? AND ifnull(dedup, seq) = ? AND received = ?",
                    (r.device_id, r.ts, key, r.received),
                ).fetchone()
            ):
                new.append(r)
        return new

    @property
    def pending_devices(self) -> int:
        """Devices whose last-seen time waits in memory for the next write."""
        return len(self._seen)

    def _flush_seen(self) -> None:
        """Write the last-seen times that wait (:class:`ingest.seen.SeenDevices`), in the
        transaction the writer is in."""
        touched = self._seen.take()
        if touched:
            self._w.db.executemany(_TOUCH_DEVICE, touched)

    def flush(self, *, if_due: bool = False) -> bool:
        """Write pending last-seen times (on shutdown; when due, by the pipeline when idle).
        Returns whether it wrote."""
        if not self._seen.waiting(if_due=if_due):
            return False
        with self._tx():
            self._flush_seen()
        return True

    def sync_registry(self, registry: Registry) -> int:
        """Write each registered device's placement; devices no longer registered keep their
        history and state but are shown as unregistered."""
        rows = [
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
        ]
        with self._tx() as db:
            db.execute("UPDATE devices SET registered = 0")
            db.executemany(
                """INSERT INTO devices (device_id, kind, community, compound, building, unit,
                       floor, room, resident_id, name, registered)
                   VALUES (?,?,?,?,?,?,?,?,?,?,1)
                   ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind,
                       community = excluded.community, compound = excluded.compound,
                       building = excluded.building, unit = excluded.unit,
                       floor = excluded.floor, room = excluded.room,
                       resident_id = excluded.resident_id, name = excluded.name,
                       registered = 1""",
                rows,
            )
        return len(rows)

    def prune(
        self,
        before: float,
        chunk: int = 5000,
        *,
        keep_after: int | None = None,
        pause_s: float = 0.02,
        forget_idle_s: float = FORGET_IDLE_S,
    ) -> int:
        """Delete raw readings received before ``before``, a few thousand per transaction so
        ingestion never waits long. Ids grow with receive time, so the cut is an id found by
        binary search, and no index on time is kept just for this. Call from its own thread.

        ``keep_after``: an id whose successors are kept whatever their age (rows the rollups or
        the InfluxDB sink have not passed yet). ``pause_s`` between transactions lets the ingest
        thread, which polls for the write lock, take it rather than wait out the whole prune.

        Also forgets devices never registered (no placement) and silent for ``forget_idle_s``:
        a stray or misconfigured publisher's ids do not pile up in ``devices`` (and in what
        loads it, like the InfluxDB sink's tags)."""
        db = self._connect()
        total = 0
        try:
            with self._write_lock, transaction(db):
                db.execute(
                    "DELETE FROM devices WHERE registered = 0 AND compound IS NULL"
                    " AND building IS NULL AND coalesce(last_seen, 0) < ?",
                    (time.time() - forget_idle_s,),
                )
            lo, hi = db.execute("SELECT min(id), max(id) FROM readings").fetchone()
            if lo is None:
                return 0
            top = hi
            cut = lo - 1  # the last id received before the cutoff
            while lo <= hi:
                mid = (lo + hi) // 2
                row = db.execute(
                    "SELECT id, received FROM readings WHERE id >= ? ORDER BY id LIMIT 1", (mid,)
                ).fetchone()
                if row is not None and row[1] < before:
                    cut, lo = row[0], row[0] + 1
                else:
                    hi = mid - 1
            if keep_after is not None:
                cut = min(cut, keep_after)
            # never the newest row: ids are rowids, and with the table empty SQLite would hand
            # out 1, 2, … again, below every follower's cursor (rules, rollups and the sink
            # would skip that many new readings without a word)
            cut = min(cut, top - 1)
            start = db.execute("SELECT min(id) FROM readings").fetchone()[0]
            while start is not None and start <= cut:
                end = min(cut, start + chunk - 1)
                with self._write_lock, transaction(db):
                    total += db.execute(
                        "DELETE FROM readings WHERE id BETWEEN ? AND ?", (start, end)
                    ).rowcount
                start = end + 1
                time.sleep(pause_s)
            return total
        finally:
            db.close()

    # ---------------------------------------------------------------- reads (any thread)

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
        """A page of devices by id. ``among`` (device ids, kinds) keeps only the devices whose
        id or kind is in it (what one reader may see); None keeps all. ``communities``: only
        the devices of these (None: of any)."""
        where, args = _filters(
            ("kind = ?", kind),
            ("building = ?", building),
            ("online = ?", None if online is None else int(online)),
            ("registered = ?", None if registered is None else int(registered)),
        )
        if communities is not None:  # communities: the devices table's community column
            cs = sorted(communities)
            where += (" AND " if where else " WHERE ") + (
                f"community IN ({','.join('?' * len(cs))})" if cs else "0"
            )
            args = (*args, *cs)
        if among is not None:
            ids, kinds = sorted(among[0]), sorted(among[1])
            ors = [
                f"{c} IN ({','.join('?' * len(v))})"
                for c, v in (("device_id", ids), ("kind", kinds))
                if v
            ]
            where += (" AND " if where else " WHERE ") + "(" + (" OR ".join(ors) or "0") + ")"
            args = (*args, *ids, *kinds)
        db = self._reader()
        total = db.execute(f"SELECT count(*) FROM devices{where}", args).fetchone()[0]
        rows = db.execute(
            f"SELECT * FROM devices{where} ORDER BY device_id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        return [_device(r) for r in rows], int(total)

    def get_device(self, device_id: str) -> dict[str, Any] | None:
        row = (
            self._reader()
            .execute("SELECT * FROM devices WHERE device_id = ?", (device_id,))
            .fetchone()
        )
        return _device(row) if row else None

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
        """A device's readings, oldest first. With ``step`` 1m or 1h, ``metric`` is required and
        values are aggregated per bucket (min, max, mean, count): from the rollups
        (:mod:`ingest.rollups`) for the metrics they keep, where a bucket counts whole when its
        start lies in [since, until)."""
        since = since if since is not None else 0.0
        until = until if until is not None else 1e12
        db = self._reader()
        if step == "raw":
            rows = db.execute(
                "SELECT ts, received, stream, event, ts_flag, seq, payload FROM readings"
                " WHERE device_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                (device_id, since, until, limit),
            ).fetchall()
            out = []
            for r in rows:
                item = raw_item(
                    r, r["stream"], _stored_body(r["payload"], r["ts"], r["seq"]), metric
                )
                if item is not None:
                    out.append(item)
            return out
        if metric is None:
            raise ValueError("step needs a metric")
        rolled = rollups.history(db, device_id, metric, step, since, until, limit)
        if rolled is not None:
            return rolled
        # not a rolled-up metric (an unknown field): aggregate the raw readings
        width = _STEP_S[step]
        path = "$." + metric
        rows = db.execute(
            "SELECT CAST(ts / ?1 AS INTEGER) * ?1 AS bucket,"
            " min(v) AS min, max(v) AS max, avg(v) AS mean, count(v) AS count FROM ("
            "  SELECT ts, json_extract(CASE WHEN json_valid(p) THEN p END, ?2) AS v FROM ("
            "   SELECT ts, stream, payload_json(payload, ts, seq) AS p FROM readings"
            "   WHERE device_id = ?3 AND ts >= ?4 AND ts < ?5 AND stream = 'telemetry'))"
            " WHERE v IS NOT NULL AND abs(v) <= ?7 GROUP BY bucket ORDER BY bucket LIMIT ?6",
            (width, path, device_id, since, until, limit, MAX_NUMBER),
        ).fetchall()
        return [
            {
                "ts": float(r["bucket"]),
                "min": r["min"],
                "max": r["max"],
                "mean": r["mean"],
                "count": r["count"],
            }
            for r in rows
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
        where, args = _filters(
            ("reason = ?", reason), ("received >= ?", since), ("received < ?", until)
        )
        if communities is not None:  # communities: by the topic's community/<id>/ prefix
            cs = sorted(communities)
            where += (" AND " if where else " WHERE ") + (
                "(" + " OR ".join(["substr(topic, 1, ?) = ?"] * len(cs)) + ")" if cs else "0"
            )
            args = (*args, *(x for c in cs for x in (len(f"community/{c}/"), f"community/{c}/")))
        db = self._reader()
        total = db.execute(f"SELECT count(*) FROM dead_letters{where}", args).fetchone()[0]
        rows = db.execute(
            f"SELECT * FROM dead_letters{where} ORDER BY id DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        return [dead_letter_item(r) for r in rows], int(total)

    def dead_letter_counts(self) -> dict[str, int]:
        rows = (
            self._reader()
            .execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
            .fetchall()
        )
        return {r[0]: int(r[1]) for r in rows}

    def last_reading(self, device_id: str) -> dict[str, Any] | None:
        """What a device sent last (its latest reading by event time; of two at the same time,
        the one journaled last — messages read together share a receive time), as :meth:`readings`
        answers a raw one; None when it has none."""
        r = (
            self._reader()
            .execute(
                "SELECT ts, received, stream, event, ts_flag, seq, payload FROM readings"
                " WHERE device_id = ? ORDER BY ts DESC, id DESC LIMIT 1",
                (device_id,),
            )
            .fetchone()
        )
        if r is None:
            return None
        return raw_item(r, r["stream"], _stored_body(r["payload"], r["ts"], r["seq"]))

    def count_readings(self, device_id: str | None = None) -> int:
        db = self._reader()
        if device_id is None:
            return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])
        return int(
            db.execute(
                "SELECT count(*) FROM readings WHERE device_id = ?", (device_id,)
            ).fetchone()[0]
        )


def _finite(text: str) -> float | None:
    v = float(text)
    return v if math.isfinite(v) else None


_LENIENT = json.JSONDecoder(parse_float=_finite, parse_constant=lambda _: None)


def _stored_body(stored: bytes | str, ts: float, seq: int | None) -> Any:
    """A row's payload as the device sent it: compact (:mod:`ingest.rowcodec`) or, in rows
    written before compact rows, JSON text."""
    return rowcodec.load(stored, ts, seq) if isinstance(stored, bytes) else _body(stored)


def _body(payload: str) -> Any:
    """A stored payload as JSON the API can answer with: a row written before decode refused
    ``NaN`` or ``1e400`` has them as null, never a response that cannot be encoded; one that
    cannot be parsed back at all (an integer past 4,300 digits, nesting past the recursion
    limit) reads as ``{}``, on its own, so the rest of the window still reads."""
    try:
        return _LENIENT.decode(payload)
    except (ValueError, RecursionError):
        return {}


def _filters(*conds: tuple[str, object]) -> tuple[str, tuple[object, ...]]:
    parts = [c for c, v in conds if v is not None]
    args = tuple(v for _, v in conds if v is not None)
    return (" WHERE " + " AND ".join(parts) if parts else ""), args


def _device(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["registered"] = bool(d["registered"])
    d["online"] = None if d["online"] is None else bool(d["online"])
    return d

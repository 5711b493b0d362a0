"""The alert database: schema, connections, and rows → :mod:`alerts.model` objects.

A SQLite file of its own (WAL), or a PostgreSQL database when opened with a ``postgresql://``
URL (:class:`Database`); the statements are the same on both (:mod:`base.sql`). One partial
unique index makes "one open alert per fingerprint" a property of the data, not of the code
that writes it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Final, cast, get_type_hints

import psycopg
from psycopg_pool import ConnectionPool

from alerts.model import (
    IN_FIRE,
    Action,
    Alert,
    AlertNotFound,
    AlertQuery,
    Audience,
    HistoryEntry,
    Sort,
)
from base import sql, sqlite
from base.sql import Db, Row
from district.pg import open_pool
from rules.transitions import SEVERITY_ORDER, Transition

SCHEMA_VERSION = 4
"""1: alerts, history, device presence. 2 (additive): escalation timers, deliveries and their
attempts, silences — the stages after the lifecycle (:mod:`alerts.dispatch`). 3 (additive):
incidents (:mod:`alerts.incidents`), ``alerts.incident_id``, ``alerts.false_alarm``,
``alert_history.data`` (the structured part of a paging entry) and ``alerts.page_at`` (when a
rule's verification window lets paging start), added by :func:`migrate`. 4 (additive): the
claim columns of ``escalations`` and ``deliveries`` (``claimed_by``, ``claim_until``,
``claims``: :mod:`alerts.claims`; used on PostgreSQL, empty on SQLite)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id              INTEGER PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    severity        TEXT NOT NULL,
    severity_rank   INTEGER NOT NULL,
    signal          TEXT NOT NULL,
    signal_rank     INTEGER NOT NULL,
    route           TEXT NOT NULL,
    summary         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('firing', 'acknowledged', 'resolved')),
    building        TEXT,
    labels          TEXT NOT NULL,
    started_at      REAL NOT NULL,
    last_match_at   REAL NOT NULL,
    raised_at       REAL NOT NULL,
    updated_at      REAL NOT NULL,
    ended_at        REAL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    resolved_at     REAL,
    resolved_by     TEXT,
    late            INTEGER NOT NULL DEFAULT 0,
    offline         INTEGER NOT NULL DEFAULT 0,
    offline_since   REAL,
    match_count     INTEGER NOT NULL DEFAULT 1,
    value           REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_fingerprint
    ON alerts (fingerprint) WHERE status != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_open_device
    ON alerts (device_id) WHERE status != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_status_priority
    ON alerts (status, signal_rank, severity_rank, started_at);
CREATE INDEX IF NOT EXISTS alerts_device ON alerts (device_id, started_at);
CREATE INDEX IF NOT EXISTS alerts_building ON alerts (building, started_at);
CREATE INDEX IF NOT EXISTS alerts_started ON alerts (started_at);
CREATE INDEX IF NOT EXISTS alerts_raised ON alerts (raised_at);

CREATE TABLE IF NOT EXISTS alert_history (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    at       REAL NOT NULL,
    action   TEXT NOT NULL,
    by       TEXT NOT NULL,
    note     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alert_history_alert ON alert_history (alert_id, id);

CREATE TABLE IF NOT EXISTS device_presence (
    device_id TEXT PRIMARY KEY,
    offline   INTEGER NOT NULL,
    since     REAL NOT NULL
);

-- 2: one timer row per alert still to be paged: the next step of its chain is due at due_at.
-- state 'chain' (step = next step to take), 'grouping' (a trouble waiting to see whether it is
-- one of many in its building), 'muted' (a silence holds it until due_at).
CREATE TABLE IF NOT EXISTS escalations (
    alert_id   INTEGER PRIMARY KEY REFERENCES alerts (id),
    chain_id   TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('chain', 'grouping', 'muted')),
    step       INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    due_at     REAL NOT NULL,
    muted_by   INTEGER,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS escalations_due ON escalations (due_at);

-- Every message to one channel of one person: the outbox (pending, retrying) and the receipts.
CREATE TABLE IF NOT EXISTS deliveries (
    id         INTEGER PRIMARY KEY,
    alert_id   INTEGER NOT NULL REFERENCES alerts (id),
    staff_id   TEXT NOT NULL,
    channel    TEXT NOT NULL,
    label      TEXT NOT NULL,
    step       INTEGER NOT NULL,
    purpose    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    priority   INTEGER NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    status     TEXT NOT NULL
        CHECK (status IN ('pending', 'retrying', 'sent', 'failed', 'cancelled')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    REAL NOT NULL,
    error      TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at    REAL
);
CREATE INDEX IF NOT EXISTS deliveries_alert ON deliveries (alert_id, id);
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (next_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX IF NOT EXISTS deliveries_staff ON deliveries (staff_id, id);

CREATE TABLE IF NOT EXISTS delivery_attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
    at          REAL NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('sent', 'retrying', 'failed')),
    error       TEXT NOT NULL DEFAULT '',
    elapsed_ms  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_attempts_delivery ON delivery_attempts (delivery_id, id);

CREATE TABLE IF NOT EXISTS silences (
    id         INTEGER PRIMARY KEY,
    rule_id    TEXT,
    kind       TEXT,
    device_id  TEXT,
    building   TEXT,
    starts_at  REAL NOT NULL,
    ends_at    REAL NOT NULL,
    reason     TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_at REAL NOT NULL,
    expired_at REAL,
    expired_by TEXT
);
CREATE INDEX IF NOT EXISTS silences_ends ON silences (ends_at);

-- 3: alerts that belong together (one fire, one building's trouble): one page per person.
-- ``group_key`` joins new alerts to the open incident of the same key.
CREATE TABLE IF NOT EXISTS incidents (
    id            INTEGER PRIMARY KEY,
    group_key     TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('firing', 'acknowledged', 'resolved')),
    severity      TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    signal_rank   INTEGER NOT NULL,
    title_key     TEXT NOT NULL,
    headline_id   INTEGER NOT NULL,
    building      TEXT,
    started_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    resolved_at   REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_open_key
    ON incidents (group_key) WHERE status != 'resolved';
CREATE INDEX IF NOT EXISTS incidents_status ON incidents (status, signal_rank, severity_rank);
CREATE INDEX IF NOT EXISTS incidents_started ON incidents (started_at);
"""

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("alerts", "incident_id", "INTEGER"),
    ("alerts", "false_alarm", "INTEGER NOT NULL DEFAULT 0"),
    ("alert_history", "data", "TEXT"),
    ("alerts", "page_at", "REAL"),
    ("escalations", "claimed_by", "TEXT"),
    ("escalations", "claim_until", "REAL"),
    ("escalations", "claims", "INTEGER NOT NULL DEFAULT 0"),
    ("deliveries", "claimed_by", "TEXT"),
    ("deliveries", "claim_until", "REAL"),
    ("deliveries", "claims", "INTEGER NOT NULL DEFAULT 0"),
)
"""Columns of schemas 3 and 4 added to the tables of schemas 1 and 2 (ALTER TABLE: older
files keep their rows)."""

SIGNAL_ORDER: dict[str, int] = {"alarm": 0, "supervisory": 1, "trouble": 2}

_STATUS_RANK = "CASE status WHEN 'firing' THEN 0 WHEN 'acknowledged' THEN 1 ELSE 2 END"
ORDER_BY: dict[Sort, str] = {
    "priority": (
        f"{_STATUS_RANK},"
        " CASE WHEN status != 'resolved' THEN signal_rank END,"
        " CASE WHEN status != 'resolved' THEN severity_rank END,"
        " CASE WHEN status != 'resolved' THEN started_at END,"
        " CASE WHEN status = 'resolved' THEN -resolved_at END, id"
    ),
    "newest": "raised_at DESC, id DESC",
    "oldest": "raised_at, id",
}


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the alert database: FULL durability (a committed alert, and the
    position of the rules that raised it, survive a power cut), foreign keys, rows by name.
    ``read_only``: a reader's (``query_only``) on the same file."""
    return sqlite.connect(
        path,
        synchronous="FULL",
        row_factory=sqlite3.Row,
        foreign_keys=True,
        query_only=read_only,
        any_thread=True,
    )


def migrate(db: sqlite3.Connection) -> None:
    """The SQLite file's schema (PostgreSQL's: district/migrations/0004_alerts.sql)."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"alert database schema {version} is newer than this jiayuan ({SCHEMA_VERSION})"
        )
    db.executescript(SCHEMA)
    for table, column, decl in _COLUMNS:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    db.execute("CREATE INDEX IF NOT EXISTS alerts_incident ON alerts (incident_id)")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


class Database(ABC):
    """The alert database: a SQLite file (one write connection, a reader per thread) or a
    PostgreSQL database (a pool; its schema is district/migrations/0004_alerts.sql, applied by
    :func:`district.pg.open_pool`). :meth:`open` picks by the location: a
    ``postgresql://`` URL or a path."""

    where: Path | str
    dialect: sql.Dialect

    @staticmethod
    def open(where: Path | str) -> Database:
        if sql.is_postgresql(where):
            return PgDatabase(str(where))
        return SqliteDatabase(Path(where))

    @abstractmethod
    def tx(self) -> AbstractContextManager[Db]:
        """One write transaction: committed when the block ends, rolled back on an exception."""

    @abstractmethod
    def writer(self) -> Db:
        """A connection for a read that must see the last commit (the caller holds its lock)."""

    @abstractmethod
    def reader(self) -> Db:
        """A connection for queries, of the calling thread's own (committed data only)."""

    @abstractmethod
    def connection(self) -> AbstractContextManager[Db]:
        """A connection of its own for a while, outside any writer's lock (SQLite: autocommit;
        PostgreSQL: a pool's connection, committed when the block ends)."""

    @abstractmethod
    def another(self) -> Database:
        """A database object for another writer (SQLite: a connection of its own; PostgreSQL:
        the same pool)."""

    @abstractmethod
    def close(self) -> None:
        """Close what this object opened (a shared pool stays open)."""


class SqliteDatabase(Database):
    dialect: sql.Dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.where = self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite.Writer(lambda: connect(path))
        migrate(self._db.db)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def tx(self) -> AbstractContextManager[Db]:
        return self._db.tx()

    def writer(self) -> Db:
        return self._db.db

    def reader(self) -> Db:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.path, read_only=True)
            self._local.db = db
            with self._lock:
                self._readers.append(db)
        return db

    @contextmanager
    def connection(self) -> Iterator[Db]:
        db = sqlite.connect(self.path, wal=False)  # the store made it WAL
        try:
            yield db
        finally:
            db.close()

    def another(self) -> Database:
        return SqliteDatabase(self.path)

    def close(self) -> None:
        with self._lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        self._db.close()


class PgDatabase(Database):
    """The alert database on PostgreSQL: every transaction and query on a connection of the
    pool. A query runs on a connection taken for that statement (as SQLite's autocommit reader
    sees only what was committed)."""

    dialect: sql.Dialect = "postgresql"

    def __init__(self, url: str, pool: ConnectionPool | None = None) -> None:
        self.where = self.url = url
        self._owner = pool is None
        self.pool = open_pool(url, name="jiayuan-alerts") if pool is None else pool
        self._reader = _PoolReader(self.pool)

    @contextmanager
    def tx(self) -> Iterator[Db]:
        with self.pool.connection() as conn:  # commits when the block ends, or rolls back
            yield sql.PgDb(conn)

    def writer(self) -> Db:
        return self._reader

    def reader(self) -> Db:
        return self._reader

    def connection(self) -> AbstractContextManager[Db]:
        return self.tx()

    def another(self) -> Database:
        return PgDatabase(self.url, self.pool)

    def close(self) -> None:
        if self._owner:
            self.pool.close()


class _PoolReader:
    """:class:`base.sql.Db` for reads: each statement on a pool's connection, its rows fetched
    before the connection goes back."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def execute(self, query: str, parameters: Any = (), /) -> sql.Cursor:
        with self._autocommit() as conn:
            cur = sql.PgDb(conn).execute(query, parameters)
            return _Fetched(cur.fetchall() if cur.description else [], cur.rowcount)

    def executemany(self, query: str, parameters: Iterable[Any], /) -> sql.Cursor:
        with self._autocommit() as conn:
            cur = sql.PgDb(conn).executemany(query, parameters)
            return _Fetched([], cur.rowcount)

    @contextmanager
    def _autocommit(self) -> Iterator[psycopg.Connection[Any]]:
        """A pool's connection in autocommit for one statement (no BEGIN/COMMIT round trips
        around a read); back to transactions before it returns to the pool."""
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                if not conn.closed:  # a broken one is the pool's to replace
                    conn.autocommit = False


class _Fetched:
    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Any]:
        rest = self._rows[self._next :]
        self._next = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class Writer:
    """A connection of its own to the alert database, for the stages after the lifecycle
    (escalation timers, deliveries, silences). Its transactions never call the store: the
    store's writes wait for SQLite's lock, and the store's lock is never taken inside one.
    ``where``: the store's :class:`Database` (on PostgreSQL its pool is shared), a path or a
    ``postgresql://`` URL."""

    def __init__(self, where: Path | str | Database) -> None:
        self.database = where.another() if isinstance(where, Database) else Database.open(where)
        self._lock = threading.Lock()

    @contextmanager
    def tx(self) -> Iterator[Db]:
        with self._lock, self.database.tx() as db:
            yield db

    def query(self, query: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self.database.writer().execute(query, tuple(args)).fetchall()

    def close(self) -> None:
        with self._lock:
            self.database.close()


def severity_rank(severity: str) -> int:
    return SEVERITY_ORDER.get(severity, len(SEVERITY_ORDER))


def signal_rank(signal: str) -> int:
    return SIGNAL_ORDER.get(signal, len(SIGNAL_ORDER))


ALERT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Alert) if f.name != "history")
"""The :class:`Alert` fields stored as columns of the same name in ``alerts`` (all but its
history, kept in ``alert_history``)."""
DERIVED_COLUMNS: tuple[str, ...] = ("severity_rank", "signal_rank", "building")
"""Columns of ``alerts`` that are not fields: kept for ordering and filtering, computed from
``severity``, ``signal`` and ``labels`` on every write."""
_BOOLS = frozenset(name for name, t in get_type_hints(Alert).items() if t is bool)


def to_alert(row: Row, history: Sequence[HistoryEntry] = ()) -> Alert:
    """The alert of a row of ``alerts``: every field from its column of the same name."""
    have = set(row.keys())
    flags = {name: bool(row[name]) for name in _BOOLS if name in have}
    labels = cast(dict[str, str], json.loads(row["labels"]))
    return sqlite.from_row(Alert, row, labels=labels, history=tuple(history), **flags)


def to_entry(row: Row) -> HistoryEntry:
    have = set(row.keys())
    return sqlite.from_row(HistoryEntry, row, data=_data(row["data"] if "data" in have else None))


def _data(text: str | None) -> dict[str, Any] | None:
    return cast(dict[str, Any], json.loads(text)) if text else None


def filters(q: AlertQuery) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause (or ``""``) and its arguments. ``since``/``until`` bound ``started_at``."""
    parts: list[str] = []
    args: list[Any] = []
    for column in ("status", "severity"):
        values = many(q.get(column))
        if values:
            parts.append(f"{column} IN ({','.join('?' * len(values))})")
            args.extend(values)
    for clause, value in (
        ("kind = ?", q.get("kind")),
        ("building = ?", q.get("building")),
        ("device_id = ?", q.get("device_id")),
        ("rule_id = ?", q.get("rule_id")),
        ("started_at >= ?", q.get("since")),
        ("started_at < ?", q.get("until")),
    ):
        if value is not None:
            parts.append(clause)
            args.append(value)
    if q.get("open_only"):
        parts.append("status != 'resolved'")
    audience = q.get("audience")
    asked = sorted(many(q.get("community")))  # communities: of the community label
    if asked:
        parts.append(_in(COMMUNITY, asked))
        args.extend(asked)
    if audience is not None and audience.restricts:
        clause, more = audience_clause(audience)
        parts.append(clause)
        args.extend(more)
    return (" WHERE " + " AND ".join(parts) if parts else ""), tuple(args)


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({','.join('?' * len(values))})" if values else "1 = 0"


def many(v: object) -> tuple[str, ...]:
    """One value or several (a filter's), as a tuple."""
    if v is None:
        return ()
    return (v,) if isinstance(v, str) else tuple(cast(Sequence[str], v))


COMMUNITY: Final = "json_extract(labels, '$.community')"
"""An alert's community (communities: its label; no column of its own)."""


def audience_clause(a: Audience) -> tuple[str, list[Any]]:
    """The SQL of :class:`Audience` (one that restricts): any of its clauses, or nothing."""
    if a.communities is not None:  # communities: theirs only, whatever else admits it
        cs = sorted(a.communities)
        # booleans PostgreSQL takes too (SQLite's 1 and 0 are integers there)
        rest, more = ("1 = 1", []) if a.everyone else audience_clause(replace(a, communities=None))
        return f"({_in(COMMUNITY, cs)} AND {rest})", [*cs, *more]
    ors: list[str] = []
    args: list[Any] = []
    for column, values in (("device_id", a.devices), ("kind", a.kinds), ("route", a.routes)):
        if values:
            ors.append(f"{column} IN ({','.join('?' * len(values))})")
            args.extend(sorted(values))
    if a.fire_residents:
        ors.append("json_extract(labels, '$.correlated') = ?")
        args.append(IN_FIRE)
    if a.delivered_to:
        ors.append("id IN (SELECT alert_id FROM deliveries WHERE staff_id = ?)")
        args.append(a.delivered_to)
    return "(" + (" OR ".join(ors) or "1 = 0") + ")", args


# ---------------------------------------------------------------- writes (lock held)


def alert_row(db: Db, alert_id: int, *, lock: bool = False) -> Row:
    """The alert's row, or :class:`AlertNotFound`. ``lock``: inside a write transaction that
    decides on it (PostgreSQL: ``FOR UPDATE``, so that two instances acknowledging at once
    are served one after the other)."""
    found: Row | None = db.execute(
        "SELECT * FROM alerts WHERE id = ?" + (sql.for_update(db) if lock else ""), (alert_id,)
    ).fetchone()
    if found is None:
        raise AlertNotFound(alert_id)
    return found


def record(
    db: Db,
    alert_id: int,
    at: float,
    action: Action,
    by: str,
    note: str,
    data: dict[str, Any] | None = None,
) -> HistoryEntry:
    """A history entry; ``data`` is its structured part (who was paged, a delivery's outcome)."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True) if data else None
    entry_id = sql.insert_id(
        db,
        "INSERT INTO alert_history (alert_id, at, action, by, note, data)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (alert_id, at, action, by, note, text),
    )
    assert entry_id is not None
    return HistoryEntry(entry_id, alert_id, at, action, by, note, data)


def insert(db: Db, t: Transition, now: float) -> int | None:
    """A new firing alert; flagged offline when its device is known to be. None when another
    writer's open alert of the same fingerprint was committed first (PostgreSQL: this insert
    waited for that transaction): the caller rematches that one instead."""
    presence = db.execute(
        "SELECT offline, since FROM device_presence WHERE device_id = ?", (t.device_id,)
    ).fetchone()
    offline = bool(presence and presence["offline"])
    values: dict[str, Any] = {
        "fingerprint": t.fingerprint,
        "rule_id": t.rule_id,
        "device_id": t.device_id,
        "kind": t.kind,
        "status": "firing",
        "started_at": t.at,
        "last_match_at": t.at,
        "raised_at": now,
        "updated_at": now,
        "late": int(t.late),
        "offline": int(offline),
        "offline_since": presence["since"] if offline else None,
        "value": t.value,
        "page_at": t.page_at,
        **_matched(t, t.labels),
    }
    return sql.insert_id(
        db,
        f"INSERT INTO alerts ({', '.join(values)}) VALUES ({', '.join(':' + c for c in values)})"
        " ON CONFLICT (fingerprint) WHERE status != 'resolved' DO NOTHING",
        values,
    )


def rematch(db: Db, row: Row, t: Transition, now: float) -> str:
    """Update the open alert ``row`` with a repeat match; returns the history note."""
    labels = to_alert(row).labels | t.labels
    matched = _matched(t, labels)
    db.execute(
        "UPDATE alerts SET match_count = match_count + 1,"
        " started_at = CASE WHEN :at < started_at THEN :at ELSE started_at END,"
        " last_match_at = CASE WHEN :at > last_match_at THEN :at ELSE last_match_at END,"
        " value = CASE WHEN :at >= last_match_at THEN :value ELSE value END, "
        + ", ".join(f"{c} = :{c}" for c in matched)
        + ", updated_at = :now WHERE id = :id",
        {**matched, "at": t.at, "value": t.value, "now": now, "id": row["id"]},
    )
    notes = [f"match {row['match_count'] + 1}"]
    if row["severity"] != t.severity:
        notes.append(f"severity {row['severity']} → {t.severity}")
    return "; ".join(notes)


def _matched(t: Transition, labels: dict[str, str]) -> dict[str, Any]:
    """The columns every match sets, on raising an alert and on a repeat match alike: what the
    rule says now, with the ranks and the building derived from it."""
    return {
        "severity": t.severity,
        "severity_rank": severity_rank(t.severity),
        "signal": t.signal,
        "signal_rank": signal_rank(t.signal),
        "route": t.route,
        "summary": t.summary,
        "labels": _json(labels),
        "building": labels.get("building"),
    }


def _json(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, ensure_ascii=False)

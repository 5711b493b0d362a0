"""The alert lifecycle: one alert per fingerprint while open, ``firing`` → ``acknowledged`` →
``resolved``, and a history entry for every change, all in SQLite so it survives restarts.

Who calls it: the rules worker (:meth:`AlertStore.apply_batch`: a batch of the engine's
transitions and device presence changes, committed with the worker's cursor and rule state in
one transaction), staff through the API (acknowledge, resolve) and the later stages (notes,
system alerts through :meth:`AlertStore.apply`). Every write is one transaction under one
lock; subscribers hear of each change after it is committed, in commit order.

Decisions:

- A repeat match of an open alert updates it (match count, latest value and time, severity,
  summary and labels as the rule now says) and keeps its status: an acknowledged alert stays
  acknowledged — someone is already on it.
- A clear resolves the open alert ``by`` ``rule`` (``auto_resolved``), whatever its status. A
  clear older (in event time) than the alert's latest match belongs to an earlier episode and
  is ignored.
- Acknowledging or resolving again *by the same person* is a no-op (a retried request); by
  someone else it is an :class:`InvalidTransition` naming who did it first, so two guards
  never both believe they own an incident. Acknowledging a resolved alert is refused.
  Resolving a firing alert directly is allowed (a false alarm needs no acknowledgement).
- Offline never resolves: it sets the ``offline`` flag of the device's open alerts (and of
  alerts raised while it stays offline) and records it; coming back clears the flag.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any, Unpack

import psycopg

from alerts import incidents
from alerts.db import (
    ORDER_BY,
    Database,
    PgDatabase,
    alert_row,
    filters,
    insert,
    many,
    record,
    rematch,
    to_alert,
    to_entry,
)
from alerts.incidents import Incident
from alerts.metrics import ALERTS, CHANGES, SUBSCRIBER_ERRORS
from alerts.model import (
    RULE,
    STATUSES,
    SYSTEM,
    Action,
    Alert,
    AlertChange,
    AlertNotFound,
    AlertQuery,
    Audience,
    HistoryEntry,
    InvalidTransition,
    NoteAction,
    Sort,
    Status,
)
from base import sql
from base.sql import Db, Row
from rules.transitions import Transition

log = logging.getLogger(__name__)

Subscriber = Callable[[AlertChange], None]
COUNTS_MAX_AGE = 2.0
"""On PostgreSQL, how long the status counts read from the database are shown before they are
read again (a scrape and the console's ops summary each ask)."""
COUNTS_WAIT_S = 2.0
"""How long reading them waits for one of the pool's connections."""
_Move = tuple[Status | None, Status]


class AlertStore:
    """The alerts of a SQLite file at ``where`` (a path), or of the PostgreSQL database of a
    ``postgresql://`` URL (its schema migrated on opening: :func:`district.pg.open_pool`)."""

    def __init__(self, where: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.database = Database.open(where)
        self.path = self.database.where
        """Where the alerts are: the SQLite file's path or the PostgreSQL URL."""
        self._clock = clock
        self._lock = threading.RLock()
        self._subscribers: dict[int, Subscriber] = {}
        self._next_token = 0
        self._pending: deque[AlertChange] = deque()
        self._delivering = False
        self.shared = self.database.dialect == "postgresql"
        """Other instances write the same alerts (PostgreSQL): the status counts and device
        presence are read from the database, not kept from this store's own writes."""
        self._counts: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        self._counts_read = float("-inf")
        db = self.database.writer()
        self._read_counts(db)
        for status in STATUSES:  # /metrics and the console's ops summary read them when asked
            ALERTS.labels(status).set_function(partial(self._count, status))
        self._presence: dict[str, tuple[bool, float]] = {}
        if not self.shared:
            self._presence = {
                r["device_id"]: (bool(r["offline"]), r["since"])
                for r in db.execute("SELECT device_id, offline, since FROM device_presence")
            }
        n_open = self._counts["firing"] + self._counts["acknowledged"]
        log.info("alert store %s: %d open alerts", _shown(self.path), n_open)

    @classmethod
    def open(cls, where: Path | str, clock: Callable[[], float] = time.time) -> AlertStore:
        """The store at ``where``: a path (SQLite) or a ``postgresql://`` URL."""
        return cls(where, clock)

    def connection(self) -> AbstractContextManager[Db]:
        """A connection of its own to the store's database, outside the store's lock (the rules
        worker loads its state on one)."""
        return self.database.connection()

    def close(self) -> None:
        with self._lock:
            self.database.close()

    # ------------------------------------------------------------------ writes

    def apply(self, t: Transition) -> AlertChange | None:
        """Fire: open an alert for ``t.fingerprint``, or update the open one. Clear: resolve the
        open one ``by`` ``rule``. Returns the change, or None when there was nothing to do."""
        changes = self.apply_batch([t])
        return changes[0] if changes else None

    def apply_batch(
        self,
        transitions: Sequence[Transition],
        presence: Sequence[tuple[str, bool, float]] = (),
        within: Callable[[Db], None] | None = None,
    ) -> list[AlertChange]:
        """Apply ``transitions`` (as :meth:`apply`) and device ``presence`` changes
        (``(device_id, offline, at)``, as :meth:`set_offline`) in ONE transaction, and run
        ``within(db)`` inside it before the commit — the rules worker writes its cursor and rule
        state there, so an evaluation's effects and its position are committed together or not
        at all. Any exception rolls everything back and reaches the caller; subscribers hear of
        the changes only after the commit. Returns the changes in commit order."""
        with self._lock:
            now = self._clock()
            done: list[tuple[HistoryEntry, list[_Move]]] = []
            seen = dict(self._presence)
            with self._tx() as db:
                for t in transitions:
                    one = self._apply_in(db, t, now)
                    if one is not None:
                        done.append(one)
                for device_id, offline, at in presence:
                    was_offline, since = self._was(db, device_id, seen)
                    if at < since or was_offline == offline:
                        continue
                    seen[device_id] = (offline, at)
                    done.extend((e, []) for e in self._presence_in(db, device_id, offline, at, now))
                if within is not None:
                    within(db)
            if not self.shared:
                self._presence = seen
            return [self._committed(entry, moves) for entry, moves in done]

    def _apply_in(
        self, db: Db, t: Transition, now: float
    ) -> tuple[HistoryEntry, list[_Move]] | None:
        row = _open_row(db, t.fingerprint)
        if t.action == "fire" and row is None:
            alert_id = insert(db, t, now)
            if alert_id is None:  # another instance's, committed meanwhile: a repeat match
                row = _open_row(db, t.fingerprint)
                assert row is not None
                note = rematch(db, row, t, now)
                return record(db, row["id"], now, "rematched", RULE, note), []
            note = "raised from late readings" if t.late else ""
            if t.page_at is not None and t.page_at > now:
                wait = f"paging waits {t.page_at - now:.0f} s for the rule's verification window"
                note = f"{note}; {wait}" if note else wait
            return record(db, alert_id, now, "raised", RULE, note), [(None, "firing")]
        if t.action == "fire":
            assert row is not None
            note = rematch(db, row, t, now)
            return record(db, row["id"], now, "rematched", RULE, note), []
        if row is None:
            log.debug("clear of %s: no open alert", t.fingerprint)
            return None
        if t.at < row["last_match_at"]:
            log.info("alert %d: clear older than its latest match ignored", row["id"])
            return None
        alert_id = row["id"]
        if t.page_at is not None and row["page_at"] != t.page_at:  # a cancel, not of this alert
            note = "a later match was cancelled on the device; the alert stays open (paged before)"
            return record(db, alert_id, now, "note", RULE, note), []
        db.execute(
            "UPDATE alerts SET status = 'resolved', resolved_at = ?1,"
            " resolved_by = ?2, ended_at = ?3, updated_at = ?1 WHERE id = ?4",
            (now, RULE, t.at, alert_id),
        )
        note = t.reason or "rule cleared"
        entry = record(db, alert_id, now, "auto_resolved", RULE, note)
        return entry, [(row["status"], "resolved")]

    def acknowledge(self, alert_id: int, by: str, note: str = "") -> AlertChange | None:
        """``firing`` → ``acknowledged``. None when ``by`` had already acknowledged it.

        Raises :class:`AlertNotFound`, or :class:`InvalidTransition` when it is resolved or
        acknowledged by someone else."""
        _check_by(by)
        with self._lock:
            now = self._clock()
            with self._tx() as db:
                current = alert_row(db, alert_id, lock=True)
                status = current["status"]
                if status == "resolved":
                    raise InvalidTransition(
                        to_alert(current),
                        "acknowledge",
                        current["resolved_by"],
                        current["resolved_at"],
                    )
                if status == "acknowledged":
                    if current["acknowledged_by"] == by:
                        return None
                    raise InvalidTransition(
                        to_alert(current),
                        "acknowledge",
                        current["acknowledged_by"],
                        current["acknowledged_at"],
                    )
                db.execute(
                    "UPDATE alerts SET status = 'acknowledged', acknowledged_at = ?1,"
                    " acknowledged_by = ?2, updated_at = ?1 WHERE id = ?3",
                    (now, by, alert_id),
                )
                entry = record(db, alert_id, now, "acknowledged", by, note)
            return self._committed(entry, [("firing", "acknowledged")])

    def resolve(
        self, alert_id: int, by: str, note: str = "", *, false_alarm: bool = False
    ) -> AlertChange | None:
        """``firing`` or ``acknowledged`` → ``resolved`` by a person (``false_alarm``: nothing
        was wrong; the weekly review counts those). None when ``by`` had already resolved it;
        :class:`InvalidTransition` when someone (or the rule) else did."""
        _check_by(by)
        with self._lock:
            now = self._clock()
            with self._tx() as db:
                current = alert_row(db, alert_id, lock=True)
                status: Status = current["status"]
                if status == "resolved":
                    if current["resolved_by"] == by:
                        return None
                    raise InvalidTransition(
                        to_alert(current),
                        "resolve",
                        current["resolved_by"],
                        current["resolved_at"],
                    )
                db.execute(
                    "UPDATE alerts SET status = 'resolved', resolved_at = ?1, resolved_by = ?2,"
                    " updated_at = ?1, false_alarm = ?3 WHERE id = ?4",
                    (now, by, int(false_alarm), alert_id),
                )
                data = {"kind": "false_alarm"} if false_alarm else None
                entry = record(db, alert_id, now, "resolved", by, note, data)
            return self._committed(entry, [(status, "resolved")])

    def add_note(
        self,
        alert_id: int,
        by: str,
        note: str,
        action: NoteAction = "note",
        data: dict[str, Any] | None = None,
    ) -> AlertChange:
        """Record something that changes no state: a person's note, or (for the notify and
        escalation stages) who was notified or escalated to, with its structured ``data``.
        Allowed in any status."""
        _check_by(by)
        with self._lock:
            now = self._clock()
            with self._tx() as db:
                alert_row(db, alert_id, lock=True)
                db.execute("UPDATE alerts SET updated_at = ? WHERE id = ?", (now, alert_id))
                entry = record(db, alert_id, now, action, by, note, data)
            change = self._committed(entry, [])
        return change

    def place(self, alert_id: int, incident_id: int, note: str) -> AlertChange:
        """Record that the alert belongs to incident ``incident_id`` (a ``note`` entry, so the
        live stream shows the alert with its incident)."""
        with self._lock:
            now = self._clock()
            with self._tx() as db:
                alert_row(db, alert_id, lock=True)
                db.execute(
                    "UPDATE alerts SET incident_id = ?, updated_at = ? WHERE id = ?",
                    (incident_id, now, alert_id),
                )
                data = {"kind": "incident", "incident_id": incident_id}
                entry = record(db, alert_id, now, "note", SYSTEM, note, data)
            return self._committed(entry, [])

    def set_offline(
        self, device_id: str, offline: bool, at: float, note: str = ""
    ) -> list[AlertChange]:
        """The device went offline (or came back) at event time ``at``: flag its open alerts,
        and remember it for alerts raised meanwhile. Never resolves anything.

        Cheap when nothing changes (a dict lookup), so it may be called with ``False`` for
        every reading a device sends. A state older than the last change is ignored (a late
        reading from before the device went silent does not bring it back)."""
        with self._lock:
            if not self.shared:  # this store is the only writer: its own memory is the truth
                was_offline, since = self._presence.get(device_id, (False, float("-inf")))
                if at < since or was_offline == offline:
                    return []
            now = self._clock()
            with self._tx() as db:
                was_offline, since = self._was(db, device_id, self._presence)
                if at < since or was_offline == offline:
                    return []
                entries = self._presence_in(db, device_id, offline, at, now, note)
            if not self.shared:
                self._presence[device_id] = (offline, at)
            return [self._committed(e, []) for e in entries]

    def _was(
        self, db: Db, device_id: str, seen: dict[str, tuple[bool, float]]
    ) -> tuple[bool, float]:
        """The device's presence before a change: on SQLite from ``seen`` (this store's own
        writes); on PostgreSQL from the shared row, locked until the commit (another instance
        may have changed it: the one that held the device's partition before a takeover)."""
        if not self.shared:
            return seen.get(device_id, (False, float("-inf")))
        row = db.execute(
            "SELECT offline, since FROM device_presence WHERE device_id = ? FOR UPDATE",
            (device_id,),
        ).fetchone()
        return (bool(row["offline"]), row["since"]) if row else (False, float("-inf"))

    def _presence_in(
        self, db: Db, device_id: str, offline: bool, at: float, now: float,
        note: str = "",
    ) -> list[HistoryEntry]:  # fmt: skip
        db.execute(
            "INSERT INTO device_presence (device_id, offline, since) VALUES (?, ?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET offline = excluded.offline,"
            " since = excluded.since",
            (device_id, int(offline), at),
        )
        rows = db.execute(
            "SELECT id FROM alerts WHERE device_id = ? AND status != 'resolved'"
            " AND offline != ? ORDER BY id",
            (device_id, int(offline)),
        ).fetchall()
        action: Action = "offline" if offline else "online"
        text = note or ("device offline; the alert stays open" if offline else "device back online")
        entries: list[HistoryEntry] = []
        for r in rows:
            db.execute(
                "UPDATE alerts SET offline = ?, offline_since = ?, updated_at = ? WHERE id = ?",
                (int(offline), at if offline else None, now, r["id"]),
            )
            entries.append(record(db, r["id"], now, action, SYSTEM, text))
        return entries

    # ------------------------------------------------------------------ reads

    def get(self, alert_id: int) -> Alert:
        """The alert with its full history, oldest entry first. Raises :class:`AlertNotFound`."""
        db = self._reader()
        row = db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            raise AlertNotFound(alert_id)
        history = db.execute(
            "SELECT * FROM alert_history WHERE alert_id = ? ORDER BY id", (alert_id,)
        ).fetchall()
        return to_alert(row, [to_entry(h) for h in history])

    def find(
        self,
        *,
        sort: Sort = "priority",
        limit: int = 50,
        offset: int = 0,
        **where: Unpack[AlertQuery],
    ) -> tuple[list[Alert], int]:
        """A page of alerts (without history) and how many match ``where`` in all (see
        :class:`alerts.model.AlertQuery`: ``since`` and ``until`` bound ``started_at``, event
        time; ``status`` and ``severity`` take one value or several; ``audience`` keeps only
        what a reader may see). See :data:`alerts.model.Sort` for the orders."""
        clause, args = filters(where)
        db = self._reader()
        total = int(db.execute(f"SELECT count(*) FROM alerts{clause}", args).fetchone()[0])
        rows = db.execute(
            f"SELECT * FROM alerts{clause} ORDER BY {ORDER_BY[sort]} LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        return [to_alert(r) for r in rows], total

    def open_alerts(self, device_id: str | None = None) -> list[Alert]:
        """Every open alert (of one device), most urgent first: what a restart resumes."""
        where = "status != 'resolved'" + (" AND device_id = ?" if device_id else "")
        rows = (
            self._reader()
            .execute(
                f"SELECT * FROM alerts WHERE {where} ORDER BY {ORDER_BY['priority']}",
                (device_id,) if device_id else (),
            )
            .fetchall()
        )
        return [to_alert(r) for r in rows]

    def admits(self, audience: Audience, alert: Alert) -> bool:
        """Whether a reader of ``audience`` may see ``alert`` (asks the outbox when only a
        delivery to the reader would admit it)."""
        decided = audience.admits(alert)
        if decided is not None:
            return decided
        row = (
            self._reader()
            .execute(
                "SELECT 1 FROM deliveries WHERE alert_id = ? AND staff_id = ? LIMIT 1",
                (alert.id, audience.delivered_to),
            )
            .fetchone()
        )
        return row is not None

    def changes_since(self, entry_id: int, limit: int = 500) -> list[AlertChange]:
        """History entries after ``entry_id`` (oldest first), each with the alert *as it is
        now*: for a live view that reconnects and catches up. Id order is commit order on
        SQLite only; on PostgreSQL (several instances) use :meth:`alerts.live.LiveFeed.since`."""
        db = self._reader()
        entries = db.execute(
            "SELECT * FROM alert_history WHERE id > ? ORDER BY id LIMIT ?", (entry_id, limit)
        ).fetchall()
        ids = sorted({e["alert_id"] for e in entries})
        alerts: dict[int, Alert] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for r in db.execute(
                f"SELECT * FROM alerts WHERE id IN ({','.join('?' * len(chunk))})", chunk
            ):
                alerts[r["id"]] = to_alert(r)
        return [AlertChange(alerts[e["alert_id"]], to_entry(e)) for e in entries]

    def refresh_incident(self, incident_id: int) -> None:
        """Bring the incident's status up to date with its alerts now (the dispatcher does it
        after each change too; a route that changed several alerts needs it at once)."""
        with self._lock, self._tx() as db:
            incidents.refresh(db, incident_id, self._clock())

    def some(self, alert_ids: Sequence[int]) -> list[Alert]:
        """The alerts of ``alert_ids`` (without history), most urgent first."""
        ids = list(alert_ids)
        if not ids:
            return []
        rows = (
            self._reader()
            .execute(
                f"SELECT * FROM alerts WHERE id IN ({','.join('?' * len(ids))})"
                f" ORDER BY {ORDER_BY['priority']}",
                ids,
            )
            .fetchall()
        )
        return [to_alert(r) for r in rows]

    def incidents(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        building: str | None = None,
        audience: Audience | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Incident], int]:
        """A page of incidents with an alert ``audience`` may see (``alert_ids``: those)."""
        return incidents.page(
            self._reader(),
            status=many(status),
            building=building,
            audience=audience,
            limit=limit,
            offset=offset,
        )

    def incident(self, incident_id: int, audience: Audience | None = None) -> Incident | None:
        """The incident, when ``audience`` may see one of its alerts (None otherwise)."""
        return incidents.get(self._reader(), incident_id, audience)

    def query(self, query: str, args: Sequence[Any] = ()) -> list[Any]:
        """A read-only query on the calling thread's reader (reports: the weekly review)."""
        return self._reader().execute(query, tuple(args)).fetchall()

    def counts_by_status(self) -> dict[str, int]:
        """Alerts by status: on SQLite kept from this store's own changes; on PostgreSQL read
        from the database (every instance's changes), at most every :data:`COUNTS_MAX_AGE`
        seconds unless this store changed one since."""
        self._fresh_counts()
        with self._lock:
            return {status: n for status, n in self._counts.items()}

    def _count(self, status: Status) -> float:
        """One status's count for the gauge (a scrape: never waits for the store's lock)."""
        self._fresh_counts()
        return float(self._counts[status])

    def _fresh_counts(self) -> None:
        database = self.database
        if not isinstance(database, PgDatabase):
            return
        if time.monotonic() - self._counts_read < COUNTS_MAX_AGE:
            return
        self._counts_read = time.monotonic()  # one try per period, even one that fails
        try:  # a scrape waits for a connection briefly, not for the pool's 30 s
            with database.pool.connection(timeout=COUNTS_WAIT_S) as conn:
                self._read_counts(sql.PgDb(conn))
        except psycopg.Error as e:  # the database away: the last counts read
            log.debug("alert counts not read: %s", e)

    def _read_counts(self, db: Db) -> None:
        counts: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        for row in db.execute("SELECT status, count(*) FROM alerts GROUP BY status"):
            counts[row[0]] = int(row[1])
        self._counts, self._counts_read = counts, time.monotonic()

    def is_offline(self, device_id: str) -> bool:
        if self.shared:
            row = (
                self._reader()
                .execute("SELECT offline FROM device_presence WHERE device_id = ?", (device_id,))
                .fetchone()
            )
            return bool(row and row[0])
        with self._lock:
            return self._presence.get(device_id, (False, 0.0))[0]

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(change)`` after every committed change, in commit order, on the
        thread that made it and while the store's lock is held: a callback must only hand the
        change over (to a queue, a loop), never block. An exception in one is logged and
        counted; it never reaches the writer nor stops the other subscribers. A callback may
        write to the store; that change is delivered after the current one. Returns a
        function that unsubscribes."""
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._subscribers[token] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(token, None)

        return unsubscribe

    # ------------------------------------------------------------------ internals

    def _tx(self) -> AbstractContextManager[Db]:
        """One write transaction on the write connection. The caller holds the lock."""
        return self.database.tx()

    def _reader(self) -> Db:
        """A connection of the calling thread's own, for queries (SQLite's WAL, PostgreSQL's
        MVCC: never waits for a writer and sees only committed data)."""
        return self.database.reader()

    def _committed(self, entry: HistoryEntry, moves: Sequence[_Move]) -> AlertChange:
        """After a commit (lock held): counts, metrics, log, then the subscribers."""
        for old, new in moves:
            if old is not None:
                self._counts[old] -= 1
            self._counts[new] += 1
        if moves and self.shared:
            self._counts_read = float("-inf")  # read again when next asked
        CHANGES.labels(entry.action).inc()
        row = alert_row(self.database.writer(), entry.alert_id)
        change = AlertChange(to_alert(row), entry)
        a = change.alert
        log.log(
            logging.DEBUG if entry.action == "rematched" else logging.INFO,
            "alert %d %s by %s: %s on %s (%s, %s)%s",
            a.id,
            entry.action,
            entry.by,
            a.rule_id,
            a.device_id,
            a.severity,
            a.status,
            " [offline]" if a.offline else "",
        )
        self._publish(change)
        return change

    def _publish(self, change: AlertChange) -> None:
        self._pending.append(change)
        if self._delivering:  # a subscriber wrote to the store: deliver after this one
            return
        self._delivering = True
        try:
            while self._pending:
                item = self._pending.popleft()
                for callback in list(self._subscribers.values()):
                    try:
                        callback(item)
                    except Exception:
                        SUBSCRIBER_ERRORS.inc()
                        log.exception(
                            "alert subscriber %r failed on alert %d %s",
                            callback,
                            item.alert.id,
                            item.action,
                        )
        finally:
            self._delivering = False


def _open_row(db: Db, fingerprint: str) -> Row | None:
    row: Row | None = db.execute(
        "SELECT * FROM alerts WHERE fingerprint = ? AND status != 'resolved'" + sql.for_update(db),
        (fingerprint,),
    ).fetchone()
    return row


def _shown(where: Path | str) -> str:
    """A location for the log: a URL without its password."""
    text = str(where)
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", text)


def _check_by(by: str) -> None:
    if not by or not by.strip():
        raise ValueError("'by' must name who acts")

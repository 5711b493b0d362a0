"""The live view of the alert history: every committed change, in commit order, with a position
a reconnecting reader can resume from — whichever instance made it.

- SQLite (one process): :class:`LocalFeed`, the store's own subscribers, exactly as before;
  a change's position is its history entry's id (``BEGIN IMMEDIATE`` serialises writers, so
  id order is commit order).
- PostgreSQL (several instances): :class:`CommitOrderFeed`. Identity ids are taken at insert,
  not at commit, so "id > last seen" can skip an entry another instance committed late. The
  migration ``0007_live.sql`` numbers each entry at COMMIT time instead (``live_changes.seq``:
  a deferred trigger under a transaction-scoped advisory lock), and wakes every instance with
  ``pg_notify``; the feed reads ``seq > cursor`` on each wake-up (and every
  :data:`POLL_S`, in case a notification was lost) and hands each change on in ``seq`` order.
  A rolled-back entry never gets a ``seq``. After its listening connection comes back it reads
  from its cursor again, so nothing committed meanwhile is missed (:class:`district.live.Listener`).

Browsers keep the history entry id as the event id (``Last-Event-ID``); :meth:`LiveFeed.since`
finds that entry's position and replays what was committed after it. Why this design and not
``(xid, id)`` below the snapshot's xmin: docs/district.md.

``live_changes`` is pruned by every instance's feed: a change is deleted once this feed has
been past it for :data:`KEEP_S` (an hour; every instance's feed reads within seconds of a
commit, so all of them are long past it), but for the newest of those: the newest change is
always kept, so a feed at it can tell positions never given from pruned ones. A console
reconnecting from an entry no longer kept gets :class:`PositionGone` from
:meth:`LiveFeed.since`: the stream answers ``resync`` (list the alerts again), never a replay
with a silent gap. A feed that was itself behind for longer (its database unreachable) finds
the gap in the positions, and hands the next change on marked ``after_gap``: its consoles are
told to resync too.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast, get_args, get_type_hints

import psycopg

from alerts.db import PgDatabase, to_alert, to_entry
from alerts.lifecycle import AlertStore
from alerts.metrics import SUBSCRIBER_ERRORS
from alerts.model import Alert, AlertChange
from base.retry import Backoff
from base.sql import Db, Row
from district.live import Listener

log = logging.getLogger(__name__)

POLL_S = 5.0
"""A PostgreSQL feed reads at least this often even when no notification woke it."""
BATCH = 500
RETRY = Backoff(first_s=0.2, max_s=5.0, jitter=0.2)
KEEP_S = 3600.0
"""A change stays in ``live_changes`` at least this long after this instance's feed read past
it (a reconnect replays at most 500 changes anyway: older positions mean ``resync``)."""
PRUNE_EVERY_S = 300.0
"""How often a feed notes its position and deletes what it has been past for :data:`KEEP_S`."""


class PositionGone(LookupError):
    """The entry a reader would resume after is no longer kept (pruned, or never given): it
    must list the alerts again instead of replaying with a gap."""


@dataclass(frozen=True, slots=True)
class LiveChange:
    """A committed change and its position in the feed (increasing in commit order)."""

    position: int
    change: AlertChange
    after_gap: bool = False
    """Changes before this one were never handed on: pruned by another instance while this
    feed was behind (its database unreachable for longer than :data:`KEEP_S`). Whoever shows
    the changes must list the alerts again (the live stream sends ``resync``)."""


LiveSubscriber = Callable[[LiveChange], None]


class LiveFeed(ABC):
    """Every instance's committed alert changes, in commit order."""

    @abstractmethod
    def subscribe(self, callback: LiveSubscriber) -> Callable[[], None]:
        """Call ``callback`` for each change committed from now on, in order, on one thread at
        a time; it must only hand the change over. Returns a function that unsubscribes."""

    @abstractmethod
    def since(self, entry_id: int, limit: int = BATCH) -> list[LiveChange]:
        """The changes committed after history entry ``entry_id`` (0: all of them), oldest
        first, each with its alert (as it is now on SQLite; as the change left it on
        PostgreSQL). Raises :class:`PositionGone` (PostgreSQL) when that entry is no longer
        kept."""

    def close(self) -> None:  # noqa: B027 - nothing to stop but for PostgreSQL's threads
        """Stop hearing changes (idempotent)."""


def open_feed(store: AlertStore) -> LiveFeed:
    """The feed of ``store``'s database: commit-ordered across instances on PostgreSQL (started
    here: listening when this returns), the store's own subscribers on SQLite."""
    if isinstance(store.database, PgDatabase):
        return CommitOrderFeed(store.database).start()
    return LocalFeed(store)


class LocalFeed(LiveFeed):
    """One process's store (SQLite): its subscribers; positions are history entry ids."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store

    def subscribe(self, callback: LiveSubscriber) -> Callable[[], None]:
        return self.store.subscribe(lambda c: callback(LiveChange(c.entry.id, c)))

    def since(self, entry_id: int, limit: int = BATCH) -> list[LiveChange]:
        return [LiveChange(c.entry.id, c) for c in self.store.changes_since(entry_id, limit)]


class CommitOrderFeed(LiveFeed):
    """The alert history of a PostgreSQL database in commit order, from every instance: a
    listener thread (``LISTEN``, reconnecting) that wakes a reader thread, which reads
    ``live_changes`` past its cursor and calls the subscribers."""

    def __init__(
        self,
        database: PgDatabase,
        *,
        poll_s: float = POLL_S,
        keep_s: float = KEEP_S,
        prune_every_s: float = PRUNE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.poll_s = poll_s
        self.keep_s, self.prune_every_s, self.clock = keep_s, prune_every_s, clock
        self.position = 0
        """The last position handed on (read by tests)."""
        self._marks: deque[tuple[float, int]] = deque()
        """(when, position) noted every ``prune_every_s``: what this feed was past, and since."""
        self._lock = threading.Lock()
        self._subscribers: dict[int, LiveSubscriber] = {}
        self._next_token = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listener = Listener(
            database.url,
            lambda _event: self._wake.set(),
            on_reconnect=self._wake.set,
            name="jiayuan-live",
        )

    def start(self) -> CommitOrderFeed:
        """Listen, then follow from what is committed now."""
        self.listener.start()
        self.position = _last_position(self.database.reader())
        self._thread = threading.Thread(target=self._run, name="jiayuan-live-feed", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        self.listener.stop()

    def subscribe(self, callback: LiveSubscriber) -> Callable[[], None]:
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._subscribers[token] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(token, None)

        return unsubscribe

    def since(self, entry_id: int, limit: int = BATCH) -> list[LiveChange]:
        db = self.database.reader()
        if entry_id <= 0:
            return _read(db, 0, limit)
        row = db.execute(
            "SELECT seq FROM live_changes WHERE history_id = ?", (entry_id,)
        ).fetchone()
        if row is None:  # pruned (or never given): what came after it cannot all be replayed
            raise PositionGone(entry_id)
        return _read(db, int(row[0]), limit)

    def prune(self) -> int:
        """Note this feed's position every ``prune_every_s``, and delete the changes it has
        been past for ``keep_s`` but the newest of them; how many were deleted (the reader
        thread calls it).

        The newest change is never deleted: after a quiet spell longer than ``keep_s`` every
        feed is at it, and finds it still kept when the next change comes with positions
        skipped (:meth:`_gap`). Nor, until a newer one has been past for ``keep_s`` too, the
        newest change this feed has been past for ``keep_s``: another instance's feed may not
        have read the change after it yet when this one prunes."""
        now = self.clock()
        if not self._marks or now - self._marks[-1][0] >= self.prune_every_s:
            self._marks.append((now, self.position))
        cut = 0
        while self._marks and now - self._marks[0][0] >= self.keep_s:
            cut = self._marks.popleft()[1]
        if not cut:
            return 0
        n = self.database.reader().execute(
            "DELETE FROM live_changes"
            " WHERE seq < (SELECT max(seq) FROM live_changes WHERE seq <= ?)",
            (cut,),
        )
        if n.rowcount:
            log.debug("live feed: pruned %d changes up to position %d", n.rowcount, cut)
        return max(0, n.rowcount)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                while not self._stop.is_set():
                    db = self.database.reader()
                    batch = _read(db, self.position, BATCH)
                    if batch and batch[0].position > self.position + 1:
                        self._gap(db, batch)
                    for item in batch:
                        self._hand_on(item)
                    if len(batch) < BATCH:
                        break
                self.prune()
                attempt = 0
            except psycopg.Error as e:
                attempt += 1
                log.warning("live feed: reading the changes failed (attempt %d): %s", attempt, e)
                self._stop.wait(RETRY.delay(attempt))
                self._wake.set()

    def _gap(self, db: Db, batch: list[LiveChange]) -> None:
        """Positions between this feed's and the next change's are missing: pruned before
        this feed read them (its consoles must list the alerts again: the first change is
        marked ``after_gap``), or never given. ``seq`` is an identity column: a database that
        crashed or failed over skips up to 32 values (PostgreSQL logs a sequence ahead), and a
        commit that failed after its numbering used one. Pruning deletes every change before
        one it keeps (:meth:`prune`), so while a change at or below this feed's position is
        still kept, nothing after it was pruned, and the missing positions were never given;
        and since the newest change is always kept, so is this feed's position while nothing
        came after it, however long ago it was."""
        first, last = self.position + 1, batch[0].position - 1
        if db.execute(
            "SELECT 1 FROM live_changes WHERE seq <= ? LIMIT 1", (self.position,)
        ).fetchone():
            log.info(
                "live feed: positions %d to %d were never given (a database restarted or failed"
                " over skips some); no change missed",
                first,
                last,
            )
            return
        log.warning(
            "live feed: changes %d to %d were pruned before this instance read them; its"
            " consoles are told to list the alerts again",
            first,
            last,
        )
        batch[0] = dataclasses.replace(batch[0], after_gap=True)

    def _hand_on(self, item: LiveChange) -> None:
        self.position = item.position
        with self._lock:
            callbacks = list(self._subscribers.values())
        for callback in callbacks:
            try:
                callback(item)
            except Exception:
                SUBSCRIBER_ERRORS.inc()
                log.exception(
                    "live subscriber %r failed on alert %d %s",
                    callback,
                    item.change.alert.id,
                    item.change.action,
                )


def _last_position(db: Db) -> int:
    return int(db.execute("SELECT coalesce(max(seq), 0) FROM live_changes").fetchone()[0])


def _read(db: Db, after: int, limit: int) -> list[LiveChange]:
    """Up to ``limit`` entries committed after position ``after``, each with its alert as the
    entry's transaction left it."""
    rows = db.execute(
        "SELECT c.seq AS live_seq, c.alert AS live_alert, h.* FROM live_changes c"
        " JOIN alert_history h ON h.id = c.history_id"
        " WHERE c.seq > ? ORDER BY c.seq LIMIT ?",
        (after, limit),
    ).fetchall()
    return [
        LiveChange(int(r["live_seq"]), AlertChange(_alert(r["live_alert"]), to_entry(r)))
        for r in rows
    ]


def _alert(snapshot: dict[str, Any]) -> Alert:
    """The alert of ``row_to_json(alerts)`` (JSON has no float type: 5.0 comes back as 5)."""
    row = {k: float(v) if k in _FLOATS and isinstance(v, int) else v for k, v in snapshot.items()}
    return to_alert(cast(Row, row))


_FLOATS: Final = frozenset(
    name for name, hint in get_type_hints(Alert).items() if float in (get_args(hint) or (hint,))
)

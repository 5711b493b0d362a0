"""Delivery through apprise: an outbox in the alert database, sent by a small pool of workers.

Every message to one channel of one person is a ``deliveries`` row (``pending`` → ``sent``, or
``retrying`` → … → ``failed``; ``cancelled`` when the alert was acknowledged or resolved before
it went out) and every attempt a ``delivery_attempts`` row. Rows are written in the same
transaction as the escalation step that decides them, so a restart sends what was decided and
not yet sent (at least once: a message whose send was under way when the process died may go
out twice; a step is never taken twice).

Apprise calls block (HTTP, SMTP), so they run on the workers, never on the ingest thread. A
channel has at most one attempt in flight, so a dead or slow channel holds one worker for at
most its timeout while the other channels go on; within a channel, alarms go first. A failure
is final when the receiver refused the message (an HTTP 4xx other than 408/429, a URL apprise
cannot parse); otherwise it is retried with exponential backoff up to ``max_attempts``.
"""

from __future__ import annotations

import heapq
import logging
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

import apprise

from alerts.db import Writer

log = logging.getLogger(__name__)

Status = Literal["pending", "retrying", "sent", "failed", "cancelled"]
Outcome = Literal["sent", "retrying", "failed"]
OPEN = ("pending", "retrying")


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    retryable: bool = False
    error: str = ""


class Sender(Protocol):
    def __call__(self, url: str, title: str, body: str) -> SendResult: ...


# ---------------------------------------------------------------------------- apprise


class _Capture(logging.Handler):
    """Apprise says why a send failed only in its log: keep what it logs on each thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        lines: list[str] | None = getattr(self.local, "lines", None)
        if lines is not None:
            lines.append(record.getMessage())

    @contextmanager
    def lines(self) -> Iterator[list[str]]:
        out: list[str] = []
        self.local.lines = out
        try:
            yield out
        finally:
            self.local.lines = None


_CAPTURE = _Capture()
_HTTP_STATUS = re.compile(r"error=(\d{3})")


def retryable(error: str) -> bool:
    """Worth another attempt: a server error, a rate limit, a connection or SMTP problem."""
    m = _HTTP_STATUS.search(error)
    if m:
        code = int(m.group(1))
        return code >= 500 or code in (408, 425, 429)
    return True


def channel_label(url: str) -> str:
    """The URL with its secrets masked and without its query: safe to show and to log."""
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        return url.split("://", 1)[0] + "://…"
    return str(plugin.url(privacy=True)).split("?", 1)[0]  # type: ignore[no-untyped-call]


class AppriseSender:
    """Send one message to one apprise URL (blocking; a fresh plugin per attempt, so no state
    or throttle is shared between threads). Apprise's own log lines are kept as the reason of a
    failure and not passed on: they may name a recipient."""

    def __init__(self) -> None:
        logger = logging.getLogger("apprise")
        if _CAPTURE not in logger.handlers:
            logger.addHandler(_CAPTURE)
        logger.propagate = False

    def __call__(self, url: str, title: str, body: str) -> SendResult:
        with _CAPTURE.lines() as lines:
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
            if plugin is None:
                return SendResult(False, False, "not a URL apprise can send to")
            try:
                ok = bool(plugin.notify(body=body, title=title))
            except Exception as e:  # a plugin bug must not kill the worker
                return SendResult(False, True, f"{type(e).__name__}: {e}"[:300])
        if ok:
            return SendResult(True)
        error = "; ".join(dict.fromkeys(lines)) or "apprise reported a failure"
        return SendResult(False, retryable(error), error[:300])


# ---------------------------------------------------------------------------- the outbox


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    alert_id: int
    staff_id: str
    label: str
    step: int
    purpose: str
    reason: str
    status: Status
    attempts: int
    error: str
    title: str
    body: str
    created_at: float
    updated_at: float
    next_at: float
    sent_at: float | None

    @classmethod
    def of(cls, r: sqlite3.Row) -> Delivery:
        return cls(
            r["id"],
            r["alert_id"],
            r["staff_id"],
            r["label"],
            r["step"],
            r["purpose"],
            r["reason"],
            r["status"],
            r["attempts"],
            r["error"],
            r["title"],
            r["body"],
            r["created_at"],
            r["updated_at"],
            r["next_at"],
            r["sent_at"],
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: int
    at: float
    outcome: Outcome
    error: str
    elapsed_ms: float
    number: int
    retry_at: float | None


ResultHook = Callable[[Delivery, Attempt], None]


def add(
    db: sqlite3.Connection,
    *,
    alert_id: int,
    staff_id: str,
    channels: Iterable[str],
    step: int,
    purpose: str,
    reason: str,
    priority: int,
    title: str,
    body: str,
    now: float,
) -> list[int]:
    """Outbox rows for one person's channels, inside the caller's transaction."""
    ids = []
    for url in channels:
        cur = db.execute(
            "INSERT INTO deliveries (alert_id, staff_id, channel, label, step, purpose, reason,"
            " priority, title, body, status, next_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            (
                alert_id,
                staff_id,
                url,
                channel_label(url),
                step,
                purpose,
                reason,
                priority,
                title,
                body,
                now,
                now,
                now,
            ),
        )
        assert cur.lastrowid is not None
        ids.append(cur.lastrowid)
    return ids


class Notifier:
    """The workers. ``submit`` after the rows are committed; ``start`` picks up what a previous
    run left in the outbox."""

    def __init__(
        self,
        db: Writer,
        sender: Sender | None = None,
        *,
        workers: int = 4,
        max_attempts: int = 5,
        backoff_s: float = 2.0,
        backoff_max_s: float = 120.0,
        clock: Callable[[], float] = time.time,
        on_result: ResultHook | None = None,
    ) -> None:
        self.db = db
        self.sender: Sender = sender or AppriseSender()
        self.workers = workers
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self.on_result = on_result
        self._cond = threading.Condition()
        self._later: list[tuple[float, int, int, str]] = []  # (next_at, priority, id, channel)
        self._ready: dict[str, list[tuple[int, int]]] = {}  # channel -> heap (priority, id)
        self._channels: deque[str] = deque()  # channels with ready items, none in flight
        self._busy: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._running = False
        self.in_flight = 0

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        rows = self.db.query(
            "SELECT id, channel, priority, next_at FROM deliveries"
            " WHERE status IN ('pending', 'retrying')"
        )
        with self._cond:
            for r in rows:
                heapq.heappush(self._later, (r["next_at"], r["priority"], r["id"], r["channel"]))
            self._running = True
        if rows:
            log.info("notify: %d messages left in the outbox by the last run", len(rows))
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"notify-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def submit(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        rows = self.db.query(
            f"SELECT id, channel, priority, next_at FROM deliveries WHERE id IN ({marks})", ids
        )
        with self._cond:
            for r in rows:
                heapq.heappush(self._later, (r["next_at"], r["priority"], r["id"], r["channel"]))
            self._cond.notify_all()

    def kick(self) -> None:
        """Look at the clock again now (a fake clock moved on)."""
        with self._cond:
            self._cond.notify_all()

    def cancel(self, alert_id: int, now: float) -> int:
        """Messages of ``alert_id`` not sent yet are dropped (it was acknowledged/resolved)."""
        with self.db.tx() as db:
            return db.execute(
                "UPDATE deliveries SET status = 'cancelled', updated_at = ? WHERE alert_id = ?"
                " AND status IN ('pending', 'retrying') AND purpose != 'update'",
                (now, alert_id),
            ).rowcount

    def idle(self) -> bool:
        with self._cond:
            return not self._later and not self._channels and not self._busy

    # ------------------------------------------------------------------ reads

    def of_alert(self, alert_id: int) -> list[Delivery]:
        rows = self.db.query("SELECT * FROM deliveries WHERE alert_id = ? ORDER BY id", (alert_id,))
        return [Delivery.of(r) for r in rows]

    def attempts(self, delivery_ids: Iterable[int]) -> dict[int, list[sqlite3.Row]]:
        ids = list(delivery_ids)
        out: dict[int, list[sqlite3.Row]] = {i: [] for i in ids}
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.query(
                f"SELECT * FROM delivery_attempts WHERE delivery_id IN ({marks}) ORDER BY id",
                chunk,
            ):
                out[r["delivery_id"]].append(r)
        return out

    def batch(self, alert_id: int, step: int, staff_id: str | None = None) -> list[str]:
        """Statuses of the messages of one step (of one person)."""
        q = "SELECT status FROM deliveries WHERE alert_id = ? AND step = ? AND purpose != 'update'"
        args: list[object] = [alert_id, step]
        if staff_id is not None:
            q += " AND staff_id = ?"
            args.append(staff_id)
        return [r[0] for r in self.db.query(q, args)]

    def page(
        self,
        *,
        status: str | None = None,
        staff_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Delivery], int]:
        parts, args = [], []
        for col, v in (("status", status), ("staff_id", staff_id)):
            if v is not None:
                parts.append(f"{col} = ?")
                args.append(v)
        where = " WHERE " + " AND ".join(parts) if parts else ""
        total = int(self.db.query(f"SELECT count(*) FROM deliveries{where}", args)[0][0])
        rows = self.db.query(
            f"SELECT * FROM deliveries{where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return [Delivery.of(r) for r in rows], total

    # ------------------------------------------------------------------ workers

    def _take(self) -> tuple[int, str] | None:
        """The next delivery to send (lock held): due ones move to their channel's queue, and
        a channel with nothing in flight gives its most urgent."""
        now = self.clock()
        while self._later and self._later[0][0] <= now:
            _, prio, did, channel = heapq.heappop(self._later)
            heap = self._ready.setdefault(channel, [])
            if not heap and channel not in self._busy:
                self._channels.append(channel)
            heapq.heappush(heap, (prio, did))
        if not self._channels:
            return None
        channel = self._channels.popleft()
        _, did = heapq.heappop(self._ready[channel])
        self._busy.add(channel)
        self.in_flight += 1
        return did, channel

    def _done(self, channel: str) -> None:
        self._busy.discard(channel)
        self.in_flight -= 1
        if self._ready.get(channel):
            self._channels.append(channel)
        else:
            self._ready.pop(channel, None)
        self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                job = None
                while self._running and (job := self._take()) is None:
                    wait = 1.0
                    if self._later:
                        wait = min(wait, max(0.01, self._later[0][0] - self.clock()))
                    self._cond.wait(wait)
                if not self._running or job is None:
                    return
            did, channel = job
            try:
                self._send(did)
            except Exception:
                log.exception("notify: delivery %d failed unexpectedly", did)
            finally:
                with self._cond:
                    self._done(channel)

    def _send(self, did: int) -> None:
        rows = self.db.query("SELECT * FROM deliveries WHERE id = ?", (did,))
        if not rows or rows[0]["status"] not in OPEN:
            return  # cancelled, or sent by a previous run
        row = rows[0]
        t0 = time.monotonic()
        result = self.sender(row["channel"], row["title"], row["body"])
        elapsed = (time.monotonic() - t0) * 1000
        now = self.clock()
        number = row["attempts"] + 1
        retry_at: float | None = None
        if result.ok:
            outcome: Outcome = "sent"
        elif result.retryable and number < self.max_attempts:
            outcome = "retrying"
            retry_at = now + min(self.backoff_max_s, self.backoff_s * 2 ** (number - 1))
        else:
            outcome = "failed"
        status: Status = "retrying" if outcome == "retrying" else outcome
        with self.db.tx() as db:
            db.execute(
                "UPDATE deliveries SET status = ?, attempts = ?, error = ?, next_at = ?,"
                " updated_at = ?, sent_at = ? WHERE id = ?",
                (
                    status,
                    number,
                    result.error,
                    retry_at or now,
                    now,
                    now if result.ok else None,
                    did,
                ),
            )
            db.execute(
                "INSERT INTO delivery_attempts (delivery_id, at, outcome, error, elapsed_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (did, now, outcome, result.error, elapsed),
            )
            fresh = db.execute("SELECT * FROM deliveries WHERE id = ?", (did,)).fetchone()
        if outcome != "sent":
            log.warning(
                "notify: delivery %d to %s %s (attempt %d/%d): %s",
                did,
                row["staff_id"],
                outcome,
                number,
                self.max_attempts,
                result.error,
            )
        if retry_at is not None:
            with self._cond:
                heapq.heappush(self._later, (retry_at, row["priority"], did, row["channel"]))
        if self.on_result is not None:
            self.on_result(
                Delivery.of(fresh),
                Attempt(did, now, outcome, result.error, elapsed, number, retry_at),
            )

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
cannot parse); otherwise it is retried up to ``max_attempts``, waiting as
:class:`base.retry.Backoff` says (the one retry policy; the wait is written to the row, not
slept on). Each attempt's result is handed to ``on_result`` (the dispatcher's queue).

With several instances on PostgreSQL (:mod:`alerts.claims`), a delivery is claimed just before
it is sent and its receipt commits only while the claim is still this instance's; what other
instances decided, or left behind when they died, is found by :meth:`Notifier.adopt` (the
dispatcher's tick) once it is due and nobody holds it. Every send carries the delivery's id as
its idempotency key (:func:`alerts.claims.with_key`: a webhook's ``Idempotency-Key`` header, an
e-mail's ``X-Idempotency-Key``) for the one window left: sent, and the receipt not committed.
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import apprise

from alerts.claims import CLAIM_S, CLAIMABLE, DB_NOW, RELEASE, instance_id, with_key
from alerts.config import NotifyConfig
from alerts.db import Writer
from alerts.outbox import OPEN, Attempt, Delivery, Outcome, Status

log = logging.getLogger(__name__)

ResultHook = Callable[[Delivery, Attempt], None]


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    retryable: bool = False
    error: str = ""


class Sender(Protocol):
    def __call__(self, url: str, title: str, body: str, *, key: str = "") -> SendResult:
        """Send one message; ``key`` (the delivery's id) is its idempotency key: the same key
        again is the same message again (a receiver may drop it)."""
        ...


# ---------------------------------------------------------------------------- apprise


_TEXT = apprise.NotifyFormat.TEXT
"""Messages are plain lines: e-mail keeps its line breaks, chat apps show them as written."""
_HTTP_STATUS = re.compile(r"error=(\d{3})")
_ADDRESS = re.compile(r"[^\s\"'<>@]+@[^\s\"'<>]+")
"""An e-mail address in apprise's words: kept in the receipt, not written to the log."""


def retryable(error: str) -> bool:
    """Worth another attempt: a server error, a rate limit, a connection or SMTP problem.

    Apprise's result says only that an attempt failed or timed out; the HTTP status its
    plugins received is in the attempt's log lines alone (``…, error=404.``), so a refusal
    (4xx) is told from the rest there."""
    m = _HTTP_STATUS.search(error)
    if m:
        code = int(m.group(1))
        return code >= 500 or code in (408, 425, 429)
    return True


class AppriseSender:
    """Send one message to one apprise URL (blocking; a fresh plugin per attempt, so no state
    or throttle is shared between threads). Apprise's result (``AppriseResult``) says whether
    the attempt succeeded, failed or timed out, and holds the log lines of that attempt alone;
    they are kept as the reason of a failure and not passed on: they may name a recipient."""

    def __init__(self) -> None:
        logging.getLogger("apprise").propagate = False

    def __call__(self, url: str, title: str, body: str, *, key: str = "") -> SendResult:
        plugin = apprise.Apprise.instantiate(with_key(url, key), suppress_exceptions=True)
        if plugin is None:
            return SendResult(False, False, "not a URL apprise can send to")
        try:
            result = apprise.Apprise(plugin).notify(body=body, title=title, body_format=_TEXT)
        except Exception as e:  # a plugin bug must not kill the worker
            return SendResult(False, True, f"{type(e).__name__}: {e}"[:300])
        if result:
            return SendResult(True)
        if result.status == apprise.AppriseResultStatus.TIMEOUT:
            return SendResult(False, True, "timed out")
        lines = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
        error = "; ".join(dict.fromkeys(lines)) or "apprise reported a failure"
        return SendResult(False, retryable(error), error[:300])


class Notifier:
    """The workers. ``submit`` after the rows are committed; ``start`` picks up what a previous
    run left in the outbox."""

    def __init__(
        self,
        db: Writer,
        sender: Sender | None = None,
        config: NotifyConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_result: ResultHook | None = None,
        instance: str | None = None,
        claim_s: float = CLAIM_S,
    ) -> None:
        self.db = db
        self.instance = instance or instance_id()
        self.claim_s = claim_s
        self.claiming = db.database.dialect == "postgresql"
        """PostgreSQL: claim each delivery before sending it (:mod:`alerts.claims`)."""
        self.sender: Sender = sender or AppriseSender()
        config = config or NotifyConfig()
        self.workers = config.workers
        self.max_attempts = config.max_attempts
        self.backoff = config.backoff
        self.clock = clock
        self.on_result = on_result
        """Called on the worker's thread after each attempt is committed: it should only hand
        the result over (the dispatcher queues it)."""
        self._cond = threading.Condition()
        self._later: list[tuple[float, int, int, str]] = []  # (next_at, priority, id, channel)
        self._ready: dict[str, list[tuple[int, int]]] = {}  # channel -> heap (priority, id)
        self._channels: deque[str] = deque()  # channels with ready items, none in flight
        self._busy: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._known: set[int] = set()  # ids queued here and not yet tried
        self.in_flight = 0
        self.errors = 0
        self.refused = 0
        """Receipts refused: this instance's claim had expired and another had taken it (the
        message may go out twice: the key lets the receiver tell)."""

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        rows = self.db.query(
            "SELECT id, channel, priority, next_at FROM deliveries"
            " WHERE status IN ('pending', 'retrying')"
        )
        with self._cond:
            for r in rows:
                self._push(r["next_at"], r["priority"], r["id"], r["channel"])
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
                self._push(r["next_at"], r["priority"], r["id"], r["channel"])
            self._cond.notify_all()

    def adopt(self, now: float, limit: int = 500) -> int:
        """PostgreSQL: queue here the deliveries due at ``now`` that nobody holds and this
        instance has not queued — decided by another instance, or claimed by one that died
        (its claim expired). Each is claimed when its turn comes; another instance queueing the
        same one finds it claimed and skips it. Returns how many were queued."""
        if not self.claiming:
            return 0
        rows = self.db.query(
            "SELECT id, channel, priority, next_at FROM deliveries"
            f" WHERE status IN ('pending', 'retrying') AND next_at <= ? AND {CLAIMABLE}"
            " ORDER BY next_at LIMIT ?",
            (now, limit),
        )
        n = 0
        with self._cond:
            for r in rows:
                if r["id"] not in self._known:
                    self._push(r["next_at"], r["priority"], r["id"], r["channel"])
                    n += 1
            if n:
                self._cond.notify_all()
        return n

    def _push(self, next_at: float, priority: int, did: int, channel: str) -> None:
        """Queue a delivery (lock held)."""
        self._known.add(did)
        heapq.heappush(self._later, (next_at, priority, did, channel))

    def kick(self) -> None:
        """Look at the clock again now (a fake clock moved on)."""
        with self._cond:
            self._cond.notify_all()

    def idle(self) -> bool:
        """Nothing due is waiting or in flight (retries due later do not count)."""
        with self._cond:
            due = bool(self._later) and self._later[0][0] <= self.clock()
            return not due and not self._channels and not self._busy

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
            again: tuple[float, int, int, str] | None = None
            try:
                again = self._send(did)
            except Exception:
                self.errors += 1
                log.exception("notify: delivery %d failed unexpectedly", did)
            finally:
                with self._cond:
                    self._known.discard(did)
                    if again is not None:
                        self._push(*again)
                    self._done(channel)

    def _claim(self, did: int) -> Any:
        """The delivery's row if it is still to be sent (and, on PostgreSQL, now claimed by
        this instance: due, and nobody else's), else None."""
        if not self.claiming:
            rows = self.db.query("SELECT * FROM deliveries WHERE id = ?", (did,))
            return rows[0] if rows and rows[0]["status"] in OPEN else None
        with self.db.tx() as db:
            return db.execute(
                f"UPDATE deliveries SET claimed_by = ?, claim_until = {DB_NOW} + ?,"
                " claims = claims + 1 WHERE id = ? AND status IN ('pending', 'retrying')"
                f" AND next_at <= ? AND {CLAIMABLE} RETURNING *",
                (self.instance, self.claim_s, did, self.clock()),
            ).fetchone()

    def _send(self, did: int) -> tuple[float, int, int, str] | None:
        """Send one delivery and commit its receipt; what to queue again (a retry), if any."""
        row = self._claim(did)
        if row is None:
            return None  # cancelled, sent by a previous run, or another instance's
        t0 = time.monotonic()
        result = self.sender(row["channel"], row["title"], row["body"], key=str(did))
        elapsed = (time.monotonic() - t0) * 1000
        now = self.clock()
        number = row["attempts"] + 1
        retry_at: float | None = None
        if result.ok:
            outcome: Outcome = "sent"
        elif result.retryable and number < self.max_attempts:
            outcome = "retrying"
            retry_at = now + self.backoff.delay(number)
        else:
            outcome = "failed"
        status: Status = "retrying" if outcome == "retrying" else outcome
        with self.db.tx() as db:
            cur = db.execute(
                f"UPDATE deliveries SET status = ?, attempts = ?, error = ?, next_at = ?,"
                f" updated_at = ?, sent_at = ?, {RELEASE} WHERE id = ? AND claims = ?",
                (
                    status,
                    number,
                    result.error,
                    retry_at or now,
                    now,
                    now if result.ok else None,
                    did,
                    row["claims"],
                ),
            )
            if cur.rowcount != 1:  # the claim expired and another instance took it over
                fresh = None
            else:
                db.execute(
                    "INSERT INTO delivery_attempts (delivery_id, at, outcome, error, elapsed_ms)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (did, now, outcome, result.error, elapsed),
                )
                fresh = db.execute("SELECT * FROM deliveries WHERE id = ?", (did,)).fetchone()
        if fresh is None:
            self.refused += 1
            log.warning(
                "notify: delivery %d to %s %s, but its claim had expired and another instance"
                " took it over: this receipt is refused (idempotency key %d)",
                did,
                row["staff_id"],
                outcome,
                did,
            )
            return None
        if outcome != "sent":
            log.warning(
                "notify: delivery %d to %s %s (attempt %d/%d): %s",
                did,
                row["staff_id"],
                outcome,
                number,
                self.max_attempts,
                _ADDRESS.sub("<address>", result.error),
            )
        if self.on_result is not None:
            self.on_result(
                Delivery.of(fresh),
                Attempt(did, now, outcome, result.error, elapsed, number, retry_at),
            )
        if retry_at is None:
            return None
        return retry_at, row["priority"], did, row["channel"]

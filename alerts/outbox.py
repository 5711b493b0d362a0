"""The deliveries table: the outbox of the notifier (``pending``, ``retrying``) and the
receipts of what was sent, failed or cancelled, with every attempt (``delivery_attempts``).

Rows are added inside the transaction that takes an escalation step (:func:`add`), so what a
step decided is in the outbox exactly when the step is taken.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import apprise

from alerts.db import Writer
from base import sql
from base.sql import Db, Row
from base.sqlite import from_row

Status = Literal["pending", "retrying", "sent", "failed", "cancelled"]
Outcome = Literal["sent", "retrying", "failed"]
OPEN = ("pending", "retrying")


@functools.lru_cache(maxsize=4096)
def channel_label(url: str) -> str:
    """The URL with its secrets masked and without its query: safe to show and to log."""
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        return url.split("://", 1)[0] + "://…"
    return str(plugin.url(privacy=True)).split("?", 1)[0]  # type: ignore[no-untyped-call]


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
    def of(cls, r: Row) -> Delivery:
        return from_row(cls, r)


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: int
    at: float
    outcome: Outcome
    error: str
    elapsed_ms: float
    number: int
    retry_at: float | None


def update_reason(status: str, by: str) -> str:
    """The reason of a follow-up (``update``) message: what became of the alert, and who did
    it (``rule``: its rule cleared it)."""
    return f"was paged; {status} by {by}"


def add(
    db: Db,
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
    next_at: float | None = None,
) -> list[int]:
    """Outbox rows for one person's channels, inside the caller's transaction; ``next_at``:
    held until then (folded with others about the same incident)."""
    ids = []
    for url in channels:
        delivery_id = sql.insert_id(
            db,
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
                now if next_at is None else max(now, next_at),
                now,
                now,
            ),
        )
        assert delivery_id is not None
        ids.append(delivery_id)
    return ids


class Outbox:
    """Reads and bulk updates of the deliveries table."""

    def __init__(self, db: Writer) -> None:
        self.db = db

    def cancel(self, alert_id: int, now: float) -> int:
        """Messages of ``alert_id`` not sent yet are dropped (it was acknowledged/resolved)."""
        with self.db.tx() as db:
            return db.execute(
                "UPDATE deliveries SET status = 'cancelled', updated_at = ? WHERE alert_id = ?"
                " AND status IN ('pending', 'retrying') AND purpose != 'update'",
                (now, alert_id),
            ).rowcount

    def of_alert(self, alert_id: int) -> list[Delivery]:
        rows = self.db.query("SELECT * FROM deliveries WHERE alert_id = ? ORDER BY id", (alert_id,))
        return [Delivery.of(r) for r in rows]

    def attempts(self, delivery_ids: Iterable[int]) -> dict[int, list[Row]]:
        ids = list(delivery_ids)
        out: dict[int, list[Row]] = {i: [] for i in ids}
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


RECENT_S = 600.0
"""The window over which "notifications fail for everyone" is judged."""


def failing_for_everyone(rows: Sequence[Any], now: float) -> str | None:
    """Given the newest delivery attempts (``outcome``, ``at``, ``staff_id``, newest first):
    a reason when, within :data:`RECENT_S`, at least three attempts to at least two people were
    made and none was sent; None otherwise (also when nothing was attempted)."""
    recent = [r for r in rows if r[1] >= now - RECENT_S]
    if any(r[0] == "sent" for r in recent):
        return None
    people = {r[2] for r in recent}
    if len(recent) < 3 or len(people) < 2:
        return None
    return f"{len(recent)} attempts to {len(people)} people in {RECENT_S / 60:.0f} min, none sent"


RECENT_ATTEMPTS = (
    "SELECT a.outcome, a.at, d.staff_id FROM delivery_attempts a"
    " JOIN deliveries d ON d.id = a.delivery_id ORDER BY a.id DESC LIMIT 200"
)

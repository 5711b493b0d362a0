"""One page per person per incident: whether a message to one person about an alert goes out
now, waits to be folded with the next, or is not sent at all.

Per person and incident (:mod:`alerts.incidents`; an alert without one is its own):

- the first message never waits;
- an alert joining an incident this person was paged about (within ``REPAGE_AFTER_S``) is sent
  only when it makes things worse (:func:`alerts.incidents.worse`: a fire confirmed, a higher
  severity, a new floor); otherwise it is ``coalesced``;
- a reminder (a later step or a repeat to someone paged already) less than ``REMIND_GAP_S``
  after their last message about the incident is dropped (``reminded``);
- a message within ``COALESCE_S`` of the previous one, or past ``MAX_PER_MINUTE`` in a minute,
  is ``held`` until then; whatever comes while one is held is folded into it (``merged``): the
  most urgent message leads, the titles of the others follow as lines of its body, so the
  person gets one message with all the news. A follow-up about an alert that is held when the
  next follow-up about it comes (acknowledged, then resolved) is replaced, not folded: the
  message and its receipt's reason say what is true when it goes out.

Each decision reads the person's messages about the incident and then writes one: with
several instances on PostgreSQL, two transactions deciding for the same person at once would
both read "nothing sent yet" and both send. :meth:`Coalescer.lock` takes a transaction-scoped
advisory lock per person first (the second decision waits for the first's commit and reads
it); SQLite's ``BEGIN IMMEDIATE`` already serialises every writer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from alerts.db import to_alert
from alerts.incidents import worse
from alerts.lifecycle import AlertStore
from alerts.messages import Message
from alerts.model import RULE, Alert
from alerts.outbox import update_reason
from base import sql
from base.sql import Db, Row

COALESCE_S: Final = 15.0
MAX_PER_MINUTE: Final = 2
REPAGE_AFTER_S: Final = 600.0
REMIND_GAP_S: Final = 60.0
How = Literal["sent", "held", "merged", "coalesced", "reminded"]
LOCK_SPACE: Final = 0x6A79  # pg_advisory_xact_lock(LOCK_SPACE, hashtext(staff_id))


class Coalescer:
    def __init__(self, store: AlertStore) -> None:
        self.store = store

    @staticmethod
    def lock(db: Db, staff_ids: Iterable[str]) -> None:
        """Before deciding for ``staff_ids`` in this transaction (PostgreSQL): each person's
        lock, in one order (two transactions paging the same people cannot deadlock), held
        until the transaction ends. Nothing on SQLite."""
        if sql.dialect(db) == "sqlite":
            return
        for sid in sorted(set(staff_ids)):
            db.execute("SELECT pg_advisory_xact_lock(?::integer, hashtext(?))", (LOCK_SPACE, sid))

    def decide(
        self,
        db: Db,
        a: Alert,
        staff_id: str,
        purpose: str,
        new: bool,
        msg: Message,
        now: float,
        priority: int,
    ) -> tuple[How, float | None]:
        """Inside the transaction that adds the delivery: what to do, and until when to hold
        (after :meth:`lock` of ``staff_id``, taken here if the caller did not)."""
        self.lock(db, (staff_id,))
        if a.incident_id is None:
            where, key = "d.alert_id = ?", a.id
        else:
            where, key = "a.incident_id = ?", a.incident_id
        rows = db.execute(
            "SELECT d.id, d.alert_id, d.status, d.created_at, d.next_at, d.sent_at, d.purpose,"
            " d.priority, d.title, d.body, d.reason"
            " FROM deliveries d JOIN alerts a ON a.id = d.alert_id"
            f" WHERE {where} AND d.staff_id = ? AND d.status != 'cancelled'",
            (key, staff_id),
        ).fetchall()
        if not rows:
            return "sent", None
        held = [r for r in rows if r["status"] == "pending" and r["next_at"] > now]
        if held:
            db.executemany(
                "UPDATE deliveries SET title = ?, body = ?, priority = ?, reason = ?,"
                " updated_at = ? WHERE id = ?",
                [(*_merge(r, a, purpose, msg, priority), now, r["id"]) for r in held],
            )
            return "merged", None
        times = sorted({_at(r) for r in rows})
        last = times[-1]
        if purpose == "notify" and a.incident_id is not None:
            about = {r["alert_id"] for r in rows if r["purpose"] != "update"} - {a.id}
            if about and now - last < REPAGE_AFTER_S:
                marks = ",".join("?" * len(about))
                before = [
                    to_alert(r)
                    for r in db.execute(f"SELECT * FROM alerts WHERE id IN ({marks})", list(about))
                ]
                if worse(a, before) is None:
                    return "coalesced", None
        if not new and purpose in ("escalate", "repeat") and now - last < REMIND_GAP_S:
            return "reminded", None
        if now - last < COALESCE_S:
            return "held", last + COALESCE_S
        recent = [t for t in times if t > now - 60.0]
        if len(recent) >= MAX_PER_MINUTE:
            return "held", recent[-MAX_PER_MINUTE] + 60.0
        return "sent", None


def _merge(
    held: Row, a: Alert, purpose: str, msg: Message, priority: int
) -> tuple[str, str, int, str]:
    """The held message with ``msg`` in it, and the reason its receipt gives."""
    lines = held["body"].splitlines()
    others = [line for line in lines if line.startswith("+ ")]
    lead = lines[: len(lines) - len(others)]
    link = msg.body.splitlines()[-1]  # the alert's own link: its lead, if it still leads
    if purpose == "update" and held["purpose"] == "update" and link in lead:
        # the news about this alert is now ``msg`` (resolved after acknowledged): it replaces
        # the stale lead; what was folded in about other alerts follows it still
        by = (a.resolved_by if a.status == "resolved" else a.acknowledged_by) or RULE
        mine = held["alert_id"] == a.id  # (else the receipt stays the other alert's)
        return (
            msg.title,
            "\n".join([msg.body, *others]),
            min(priority, held["priority"]),
            update_reason(a.status, by) if mine else held["reason"],
        )
    return (*_fold(held, msg, priority), held["reason"])


def _fold(held: Row, msg: Message, priority: int) -> tuple[str, str, int]:
    """One message of the held one and ``msg``: the more urgent leads (ties: the newer)."""
    if (msg.title, msg.body) == (held["title"], held["body"]) or f"+ {msg.title}" in held["body"]:
        return held["title"], held["body"], held["priority"]
    if priority <= held["priority"]:
        return msg.title, f"{msg.body}\n+ {held['title']}", priority
    return held["title"], f"{held['body']}\n+ {msg.title}", held["priority"]


def _at(r: Row) -> float:
    """When the message went (or goes) out."""
    if r["sent_at"] is not None:
        return float(r["sent_at"])
    if r["status"] == "pending":
        return float(max(r["created_at"], r["next_at"]))
    return float(r["created_at"])

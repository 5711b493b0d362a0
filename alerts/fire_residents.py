"""A resident down in a burning home: news for everyone paged about the fire.

A resident's fall or silent wearable in a home whose smoke detector is in alarm is raised to
critical and joins the building's fire incident (:mod:`alerts.correlation`,
:mod:`alerts.incidents`), whichever came first. The guards who run the fire response are paged
about the fire, not the fall (its route is the caretakers'): :class:`FireResidents` pages them an
update about it — place and kind, never the resident's name nor a measured value
(:func:`alerts.messages.resident_in_fire`) — through the coalescer like every message, once per
person and resident alert. Told are all those paged about the incident's other alerts but the
resident's own caretakers (paged the alert itself, by its chain).

The update's delivery row is also what lets a guard see the resident's alert on the board, its
page and the live stream (:class:`alerts.model.Audience` ``delivered_to``); the API still
hides its value from all but the caretakers (:meth:`jiayuan.auth.scope.Scope.redact`).

It is asked when a resident's alert is placed in a fire (:class:`TellResidents`, the stage after
``place``) and after each step paging a fire's alert (someone paged about the fire later, by an
escalation, hears of the residents in it then).
"""

from __future__ import annotations

import logging
from typing import Final

from alerts.correlation import CORRELATED, RESIDENT_RULES
from alerts.db import Writer, severity_rank, signal_rank, to_alert
from alerts.incidents import FIRE_RULES
from alerts.messages import resident_in_fire
from alerts.model import Alert
from alerts.outbox import add
from alerts.paging import Submit, Wording
from alerts.routing import Router
from alerts.stages import History, Item
from alerts.throttle import Coalescer

log = logging.getLogger(__name__)

FOLDED: Final = "a resident in the fire; folded into the message waiting for them"


def about_fire(a: Alert) -> bool:
    """Whether paging ``a`` may be paging someone about a fire with residents in it."""
    return a.incident_id is not None and (a.rule_id in FIRE_RULES or in_fire(a))


def in_fire(a: Alert) -> bool:
    """A resident's alert raised by a smoke alarm at home."""
    return a.rule_id in RESIDENT_RULES and a.labels.get("correlated") == CORRELATED


class FireResidents:
    """Pages the residents' alerts of a fire incident to those paged about the fire who have
    not heard of them."""

    def __init__(
        self,
        db: Writer,
        router: Router,
        coalescer: Coalescer,
        history: History,
        wording: Wording,
        submit: Submit,
    ) -> None:
        self.db, self.router, self.gate = db, router, coalescer
        self.history, self.wording, self.submit = history, wording, submit

    def tell(self, incident_id: int, now: float) -> int:
        """Page what nobody paged about incident ``incident_id`` heard of yet; how many
        people were told (or folded in)."""
        marks = ",".join("?" * len(RESIDENT_RULES))
        rules = sorted(RESIDENT_RULES)
        residents = [
            a
            for a in map(
                to_alert,
                self.db.query(
                    f"SELECT * FROM alerts WHERE incident_id = ? AND rule_id IN ({marks})"
                    " AND status != 'resolved' ORDER BY id",
                    (incident_id, *rules),
                ),
            )
            if in_fire(a)
        ]
        if not residents:
            return 0
        paged = {
            r[0]
            for r in self.db.query(
                "SELECT DISTINCT d.staff_id FROM deliveries d JOIN alerts o ON o.id = d.alert_id"
                f" WHERE o.incident_id = ? AND o.rule_id NOT IN ({marks})"
                " AND d.status != 'cancelled' AND d.purpose != 'update'",
                (incident_id, *rules),
            )
        }
        if not paged:
            return 0
        marks_ids = ",".join("?" * len(residents))
        told: set[tuple[int, str]] = {
            (int(r[0]), r[1])
            for r in self.db.query(
                "SELECT DISTINCT alert_id, staff_id FROM deliveries"
                f" WHERE alert_id IN ({marks_ids})",
                [a.id for a in residents],
            )
        }
        n = 0
        for a in residents:
            n += self._tell(a, sorted(sid for sid in paged if (a.id, sid) not in told), now)
        return n

    def _tell(self, a: Alert, staff_ids: list[str], now: float) -> int:
        registry = self.router.registry
        resident = registry.residents.get(a.labels.get("resident_id") or "")
        own = set(resident.caretakers) if resident is not None else set()
        whom = [
            sid
            for sid in staff_ids
            if sid not in own and sid in registry.staff and registry.staff[sid].channels
        ]
        if not whom:
            return 0
        msg = resident_in_fire(a, self.wording.language, self.wording.base_url)
        prio = signal_rank(a.signal) * 10 + severity_rank(a.severity)
        reason = f"paged about incident {a.incident_id}: a resident in the fire"
        ids: list[int] = []
        outcomes: list[tuple[str, str]] = []
        with self.db.tx() as db:
            self.gate.lock(db, whom)
            for sid in whom:
                if db.execute(  # told meanwhile (another instance, after the person's lock)
                    "SELECT 1 FROM deliveries WHERE alert_id = ? AND staff_id = ?", (a.id, sid)
                ).fetchone():
                    continue
                how, at = self.gate.decide(db, a, sid, "update", False, msg, now, prio)
                outcomes.append((sid, how))
                rows = add(
                    db,
                    alert_id=a.id,
                    staff_id=sid,
                    channels=registry.staff[sid].channels,
                    step=-1,
                    purpose="update",
                    reason=reason if how != "merged" else FOLDED,
                    priority=prio,
                    title=msg.title,
                    body=msg.body,
                    now=now,
                    next_at=at,
                )
                if how == "merged":  # its text is in the held message: this row is not sent
                    db.execute(
                        f"UPDATE deliveries SET status = 'cancelled' WHERE id IN"
                        f" ({','.join('?' * len(rows))})",
                        rows,
                    )
                else:
                    ids += rows
        self.submit(ids)
        if not outcomes:
            return 0
        named = ", ".join(
            sid + ("" if how == "sent" else f" ({_NOTE.get(how, how)})") for sid, how in outcomes
        )
        self.history.note(
            a.id, "notified", f"a resident in the fire: told those paged about it → {named}"
        )
        log.info("alert %d %s in incident %s: told %s", a.id, a.rule_id, a.incident_id, named)
        return len(outcomes)


_NOTE: Final = {"held": "sent shortly", "merged": "folded into the message waiting for them"}


class TellResidents:
    """The stage after ``place`` and after ``page``: when the alert is a resident's in a fire
    incident, or a fire's just paged, the residents' alerts of that incident are told to those
    paged about the fire who have not heard of them (nothing when they have)."""

    def __init__(self, residents: FireResidents) -> None:
        self.residents = residents

    def __call__(self, item: Item) -> Item:
        a = item.alert
        if a.incident_id is not None and about_fire(a) and a.status != "resolved":
            self.residents.tell(a.incident_id, item.now)
        return item

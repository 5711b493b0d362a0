"""Incidents: alerts that belong together, paged as one.

- A fire: the smoke alarms and CO alarms of one building and their ``fire_confirmed``, and a
  resident's fall or silent wearable raised to critical by a smoke alarm at home
  (``fire:<building>``).
- A building's trouble: trouble signals of its devices and the ``building_trouble`` alert that
  groups them (``trouble:<building>``).
- Anything else is an incident of its own.

A new alert joins the open incident of its key, or opens one. An incident is ``resolved`` when
all its alerts are, ``acknowledged`` when all its open ones are, else ``firing``; its severity is
the worst of its alerts and its headline (``title_key``) the most urgent one (in a fire, a fire
alert). Rows live in the ``incidents`` table of ``alerts.db`` (:mod:`alerts.db`), the alert's
side in ``alerts.incident_id``, so they survive a restart.

:func:`worse` says whether an alert joining an incident is news for those already paged (a
fire confirmed, a higher severity, a new floor, a resident in it): only then are they paged
again. A resident's alert in a fire is not on the guards' route: :mod:`alerts.fire_residents`
pages it to those paged about the fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from alerts import system
from alerts.db import Writer, audience_clause, severity_rank, signal_rank
from alerts.model import Alert, Audience, Status
from base import sql
from base.sql import Db, Row

FIRE_RULES: Final = frozenset({"smoke_alarm", "smoke_co_high", "fire_confirmed"})
WORSE_RULES: Final = frozenset({"fire_confirmed"})
"""Joining an incident, these are always news."""
TROUBLE_RULE: Final = system.BUILDING_TROUBLE.id
OWN_RULES: Final = frozenset({system.STAFF_UNREACHABLE.id, system.NOBODY_REACHED.id})
"""Trouble about paging itself: never grouped with what it is about."""


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    group_key: str
    status: Status
    severity: str
    title_key: str
    headline_id: int
    building: str | None
    started_at: float
    updated_at: float
    resolved_at: float | None
    alert_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, r: Row, alert_ids: tuple[int, ...] = ()) -> Incident:
        return cls(
            r["id"],
            r["group_key"],
            r["status"],
            r["severity"],
            r["title_key"],
            r["headline_id"],
            r["building"],
            r["started_at"],
            r["updated_at"],
            r["resolved_at"],
            alert_ids,
        )


def group_key(a: Alert) -> str:
    """The key of the incident ``a`` belongs to."""
    building = a.building
    if building and a.rule_id not in OWN_RULES:
        if a.rule_id in FIRE_RULES or a.labels.get("correlated") == "smoke_alarm":
            return f"fire:{building}"
        if a.rule_id == TROUBLE_RULE:
            return f"trouble:{a.device_id}"
        if a.signal == "trouble":
            return f"trouble:{building}"
    return f"alert:{a.id}"


def floor_of(a: Alert) -> str | None:
    lb = a.labels
    if lb.get("floor"):
        return lb["floor"]
    unit = lb.get("unit") or ""
    tail = unit.rsplit("-", 1)[-1]
    return tail[:-2] if len(tail) >= 3 and tail.isdigit() else None


def worse(a: Alert, before: list[Alert]) -> str | None:
    """Why ``a`` is news to someone already paged about ``before`` (its incident's other
    alerts), or None."""
    if not before:
        return "first alert"
    if a.rule_id in WORSE_RULES and all(b.rule_id != a.rule_id for b in before):
        return f"{a.rule_id}"
    if severity_rank(a.severity) < min(severity_rank(b.severity) for b in before):
        return f"severity {a.severity}"
    resident = a.labels.get("resident_id")
    if resident and all(b.labels.get("resident_id") != resident for b in before):
        return f"resident {resident}"  # someone to look for in the fire
    floor = floor_of(a)
    if floor is not None and a.rule_id in FIRE_RULES and floor not in {floor_of(b) for b in before}:
        return f"floor {floor}"
    return None


class Incidents:
    """Writes of the ``incidents`` table (the dispatcher's thread) and its reads."""

    def __init__(self, db: Writer) -> None:
        self.db = db

    def join(self, a: Alert, now: float) -> tuple[int, bool]:
        """The open incident of ``a``'s key (created when there is none, with ``a`` in it when
        ``a`` had no incident yet), and whether it is new."""
        key = group_key(a)
        with self.db.tx() as db:
            row = _open(db, key)
            if row is not None:
                return int(row["id"]), False
            incident_id = sql.insert_id(
                db,
                "INSERT INTO incidents (group_key, status, severity, severity_rank, signal_rank,"
                " title_key, headline_id, building, started_at, updated_at)"
                " VALUES (?, 'firing', ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (group_key) WHERE status != 'resolved' DO NOTHING",
                (
                    key,
                    a.severity,
                    severity_rank(a.severity),
                    signal_rank(a.signal),
                    a.rule_id,
                    a.id,
                    a.building,
                    a.started_at,
                    now,
                ),
            )
            if incident_id is None:  # another instance's, committed meanwhile
                row = _open(db, key)
                assert row is not None
                return int(row["id"]), False
            if a.incident_id is None:  # a new alert opening its own incident: placed at once
                db.execute("UPDATE alerts SET incident_id = ? WHERE id = ?", (incident_id, a.id))
            return incident_id, True

    def refresh(self, incident_id: int, now: float) -> tuple[Status, Status] | None:
        """Status, severity and headline from its alerts; (old, new) status, None if gone.
        An incident left without alerts (they moved to another) is deleted."""
        with self.db.tx() as db:
            return refresh(db, incident_id, now)


def _open(db: Db, key: str) -> Row | None:
    row: Row | None = db.execute(
        "SELECT id FROM incidents WHERE group_key = ? AND status != 'resolved'", (key,)
    ).fetchone()
    return row


def refresh(db: Db, incident_id: int, now: float) -> tuple[Status, Status] | None:
    """:meth:`Incidents.refresh` inside the caller's transaction."""
    inc = db.execute(
        "SELECT * FROM incidents WHERE id = ?" + sql.for_update(db), (incident_id,)
    ).fetchone()
    if inc is None:
        return None
    rows = db.execute(
        "SELECT id, rule_id, status, severity_rank, signal_rank, severity, started_at,"
        " resolved_at FROM alerts WHERE incident_id = ?",
        (incident_id,),
    ).fetchall()
    if not rows:
        db.execute("DELETE FROM incidents WHERE id = ?", (incident_id,))
        return None
    open_rows = [r for r in rows if r["status"] != "resolved"]
    status: Status
    if not open_rows:
        status = "resolved"
    elif all(r["status"] == "acknowledged" for r in open_rows):
        status = "acknowledged"
    else:
        status = "firing"
    pool = open_rows or rows
    fire = inc["group_key"].startswith("fire:")
    # a fire's headline is a fire alert, even when a resident's fall in it came first or is
    # more severe: the fire threatens the whole building, and the fall is listed in it
    head = min(
        pool,
        key=lambda r: (
            fire and r["rule_id"] not in FIRE_RULES,
            r["signal_rank"],
            r["severity_rank"],
            r["started_at"],
        ),
    )
    worst = min(rows, key=lambda r: r["severity_rank"])
    resolved_at = max(r["resolved_at"] or now for r in rows) if status == "resolved" else None
    db.execute(
        "UPDATE incidents SET status = ?, severity = ?, severity_rank = ?,"
        " signal_rank = ?, title_key = ?, headline_id = ?, started_at = ?,"
        " updated_at = ?, resolved_at = ? WHERE id = ?",
        (
            status,
            worst["severity"],
            worst["severity_rank"],
            head["signal_rank"],
            head["rule_id"],
            head["id"],
            min(r["started_at"] for r in rows),
            now,
            resolved_at,
            incident_id,
        ),
    )
    return inc["status"], status


# ---------------------------------------------------------------------------- reads

_ORDER: Final = (
    "CASE status WHEN 'firing' THEN 0 WHEN 'acknowledged' THEN 1 ELSE 2 END,"
    " CASE WHEN status != 'resolved' THEN signal_rank END,"
    " CASE WHEN status != 'resolved' THEN severity_rank END,"
    " CASE WHEN status != 'resolved' THEN started_at END,"
    " CASE WHEN status = 'resolved' THEN -resolved_at END, id"
)


def _seen(audience: Audience | None) -> tuple[str, list[Any]]:
    """A condition on an ``alerts`` row: the reader may see it."""
    if audience is None or not audience.restricts:
        return "1 = 1", []
    return audience_clause(audience)


def page(
    db: Db,
    *,
    status: tuple[str, ...] = (),
    building: str | None = None,
    audience: Audience | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Incident], int]:
    """Incidents with at least one alert the reader may see, most urgent first."""
    seen, args = _seen(audience)
    parts = [f"EXISTS (SELECT 1 FROM alerts WHERE alerts.incident_id = incidents.id AND {seen})"]
    if status:
        parts.append(f"status IN ({','.join('?' * len(status))})")
        args += list(status)
    if building is not None:
        parts.append("building = ?")
        args.append(building)
    where = " WHERE " + " AND ".join(parts)
    total = int(db.execute(f"SELECT count(*) FROM incidents{where}", args).fetchone()[0])
    rows = db.execute(
        f"SELECT * FROM incidents{where} ORDER BY {_ORDER} LIMIT ? OFFSET ?",
        (*args, limit, offset),
    ).fetchall()
    return [Incident.of(r, members(db, r["id"], audience)) for r in rows], total


def get(db: Db, incident_id: int, audience: Audience | None) -> Incident | None:
    """The incident when the reader may see one of its alerts."""
    row = db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        return None
    ids = members(db, incident_id, audience)
    return Incident.of(row, ids) if ids else None


def members(db: Db, incident_id: int, audience: Audience | None) -> tuple[int, ...]:
    seen, args = _seen(audience)
    rows = db.execute(
        f"SELECT id FROM alerts WHERE incident_id = ? AND {seen} ORDER BY id",
        (incident_id, *args),
    ).fetchall()
    return tuple(int(r[0]) for r in rows)

"""Silences and maintenance windows: while one is active, the alerts it matches are still raised
and recorded, but nobody is paged (their history says which silence held them back).

Matchers: ``rule_id``, ``kind``, ``device_id``, ``building``; every one given must equal the
alert's; at least one is required. A window starts at ``starts_at`` (a maintenance window
planned ahead) and ends at ``ends_at`` or when someone expires it.

A broad silence never hides a fire: a silence that could match a ``critical`` rule must name the
device (``device_id``), or it is refused; and whatever a silence says, a critical alert is only
held back by a silence naming its own device.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from alerts.db import Writer
from alerts.model import Alert
from base import sql
from base.sql import Row

MATCHERS = ("rule_id", "kind", "device_id", "building")


class RuleLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def severity(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SyntheticRule:
    """A rule this package raises itself (an incident), for the critical check."""

    id: str
    kind: str
    severity: str


class SilenceRefused(ValueError):
    """The silence is not allowed; ``field`` names what to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class SilenceNotFound(LookupError):
    def __init__(self, silence_id: int) -> None:
        super().__init__(f"silence {silence_id} not found")
        self.silence_id = silence_id


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    rule_id: str | None
    kind: str | None
    device_id: str | None
    building: str | None
    starts_at: float
    ends_at: float
    reason: str
    author: str
    created_at: float
    expired_at: float | None = None
    expired_by: str | None = None

    @classmethod
    def of(cls, row: Row) -> Silence:
        return cls(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - Row

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, alert: Alert) -> bool:
        return all(
            want is None or want == have
            for want, have in (
                (self.rule_id, alert.rule_id),
                (self.kind, alert.kind),
                (self.device_id, alert.device_id),
                (self.building, alert.building),
            )
        )

    def mutes(self, alert: Alert, now: float) -> bool:
        """Active, matching, and (for a critical alert) naming its device."""
        if not (self.active(now) and self.matches(alert)):
            return False
        return alert.severity != "critical" or self.device_id == alert.device_id

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k)}" for k in MATCHERS if getattr(self, k) is not None]
        return f"silence {self.id} ({', '.join(parts)}; {self.reason})"


def critical_rules(rules: Iterable[RuleLike], rule_id: str | None, kind: str | None) -> list[str]:
    """Ids of the critical rules a silence with these matchers could mute."""
    return sorted(
        r.id
        for r in rules
        if r.severity == "critical"
        and (rule_id is None or r.id == rule_id)
        and (kind is None or r.kind == kind)
    )


class Silences:
    def __init__(self, db: Writer, rules: Iterable[RuleLike]) -> None:
        self.db = db
        self.rules = list(rules)

    def create(
        self,
        *,
        starts_at: float,
        ends_at: float,
        reason: str,
        author: str,
        now: float,
        rule_id: str | None = None,
        kind: str | None = None,
        device_id: str | None = None,
        building: str | None = None,
    ) -> Silence:
        """A new silence, or :class:`SilenceRefused`."""
        if not any((rule_id, kind, device_id, building)):
            raise SilenceRefused(
                "matchers",
                "name at least one of rule_id, kind, device_id, "
                "building: a silence never mutes everything",
            )
        if ends_at <= starts_at:
            raise SilenceRefused("ends_at", "ends_at must be later than starts_at")
        if ends_at <= now:
            raise SilenceRefused("ends_at", "ends_at is in the past")
        if not reason.strip():
            raise SilenceRefused("reason", "say why (reason)")
        if not author.strip():
            raise SilenceRefused("author", "say who (author)")
        critical = critical_rules(self.rules, rule_id, kind)
        if critical and device_id is None:
            raise SilenceRefused(
                "device_id",
                "this silence could mute critical alarms (" + ", ".join(critical) + "); "
                "a broad silence never hides a fire: name the device (device_id)",
            )
        with self.db.tx() as db:
            silence_id = sql.insert_id(
                db,
                "INSERT INTO silences (rule_id, kind, device_id, building, starts_at, ends_at,"
                " reason, author, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rule_id,
                    kind,
                    device_id,
                    building,
                    starts_at,
                    ends_at,
                    reason.strip(),
                    author.strip(),
                    now,
                ),
            )
            row = db.execute("SELECT * FROM silences WHERE id = ?", (silence_id,)).fetchone()
        return Silence.of(row)

    def get(self, silence_id: int) -> Silence:
        rows = self.db.query("SELECT * FROM silences WHERE id = ?", (silence_id,))
        if not rows:
            raise SilenceNotFound(silence_id)
        return Silence.of(rows[0])

    def expire(self, silence_id: int, by: str, now: float) -> tuple[Silence, bool]:
        """End it now. Returns the silence and whether this call ended it."""
        with self.db.tx() as db:
            row = db.execute(
                "SELECT * FROM silences WHERE id = ?" + sql.for_update(db), (silence_id,)
            ).fetchone()
            if row is None:
                raise SilenceNotFound(silence_id)
            if row["ends_at"] <= now or row["expired_at"] is not None:
                return Silence.of(row), False
            db.execute(
                "UPDATE silences SET ends_at = ?1, expired_at = ?1, expired_by = ?2,"
                " starts_at = CASE WHEN ?1 < starts_at THEN ?1 ELSE starts_at END"
                " WHERE id = ?3",
                (now, by, silence_id),
            )
            row = db.execute("SELECT * FROM silences WHERE id = ?", (silence_id,)).fetchone()
        return Silence.of(row), True

    def active(self, now: float) -> list[Silence]:
        rows = self.db.query(
            "SELECT * FROM silences WHERE starts_at <= ?1 AND ends_at > ?1 ORDER BY id", (now,)
        )
        return [Silence.of(r) for r in rows]

    def muting(self, alert: Alert, now: float) -> Silence | None:
        """The active silence that mutes ``alert`` (the one ending last), if any."""
        found = [s for s in self.active(now) if s.mutes(alert, now)]
        return max(found, key=lambda s: s.ends_at) if found else None

    def page(
        self, *, now: float, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Silence], int]:
        """``state``: ``active``, ``pending`` (not started), ``expired``, or None for all."""
        where, args = {
            "active": ("WHERE starts_at <= ?1 AND ends_at > ?1", (now,)),
            "pending": ("WHERE starts_at > ?1", (now,)),
            "expired": ("WHERE ends_at <= ?1", (now,)),
        }.get(state or "", ("", ()))
        total = int(self.db.query(f"SELECT count(*) FROM silences {where}", args)[0][0])
        rows = self.db.query(
            f"SELECT * FROM silences {where} ORDER BY id DESC LIMIT {int(limit)}"
            f" OFFSET {int(offset)}",
            args,
        )
        return [Silence.of(r) for r in rows], total

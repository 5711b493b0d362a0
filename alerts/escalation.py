"""Escalation: chains (who next, after how long) and the timers that drive them.

Chains come from a YAML file validated with pydantic (``alerts/chains.yaml`` is built in; see
its header for the format); errors name the file, the chain and the field.

Timers are rows of the ``escalations`` table (one per alert still to be paged: the chain, the
next step, when it is due), polled by the scheduler. A step is taken by a compare-and-set on
the row (its step, state and due time as read) in the same transaction that writes the step's
messages to the outbox (:mod:`alerts.notify`): whichever process or thread commits first takes
it, the other finds the row moved on. So a restart mid-escalation takes the next step when it
is due — overdue ones at once — and never twice. On PostgreSQL (several instances) a due timer
is first claimed by one dispatcher (:mod:`alerts.claims`): the others skip it, and the
compare-and-set also names the claim's token, so a holder whose claim expired is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from alerts.claims import CLAIM_S, CLAIMABLE, DB_NOW, RELEASE, instance_id
from alerts.db import Writer
from alerts.model import Alert
from alerts.routing import SELECTOR
from base.sql import Db, Row
from base.sqlite import from_row
from rules.model import Duration
from rules.transitions import Route, Severity

TimerState = Literal["chain", "grouping", "muted"]
Selector = Annotated[str, StringConstraints(pattern=f"^(?:{SELECTOR.pattern})$")]
ROUTES: Final[tuple[str, ...]] = get_args(Route)


def builtin_chains() -> Path:
    return Path(__file__).resolve().parent / "chains.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Model):
    """Each list given must contain the alert's value; an empty one matches all."""

    rules: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    severities: tuple[Severity, ...] = ()
    kinds: tuple[str, ...] = ()

    def fits(self, alert: Alert) -> bool:
        return all(
            not want or have in want
            for want, have in (
                (self.rules, alert.rule_id),
                (self.routes, alert.route),
                (self.severities, alert.severity),
                (self.kinds, alert.kind),
            )
        )

    def covers_route(self, route: str) -> bool:
        """Matches every alert of ``route``."""
        return not (self.rules or self.severities or self.kinds) and (
            not self.routes or route in self.routes
        )


class Step(_Model):
    after: Duration = Field(default=0.0, ge=0)
    """Seconds after the alert was raised."""
    to: tuple[Selector, ...] = Field(min_length=1)


class Chain(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    match: Match = Match()
    steps: tuple[Step, ...] = Field(min_length=1)
    repeat: Duration | None = Field(default=None, ge=30)
    """After the last step, send it again at this interval until acknowledged."""
    repeat_limit: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Chain:
        for i in range(1, len(self.steps)):
            if self.steps[i].after < self.steps[i - 1].after:
                raise ValueError(f"steps[{i + 1}].after is earlier than the step before it")
        return self

    def due(self, step: int, started_at: float, last_due: float) -> float | None:
        """When step ``step`` (0-based; past the last: a repeat) is due, or None: chain done."""
        if step < len(self.steps):
            return started_at + self.steps[step].after
        repeats = step - len(self.steps) + 1
        if self.repeat is None or (self.repeat_limit is not None and repeats > self.repeat_limit):
            return None
        return last_due + self.repeat

    def step(self, step: int) -> Step:
        return self.steps[min(step, len(self.steps) - 1)]


class ChainFileError(ValueError):
    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("escalation chains:\n" + "\n".join(f"  {p}" for p in problems))


class Chains:
    """The loaded chains, in file order; :meth:`select` picks the first that fits."""

    def __init__(self, chains: Iterable[Chain]) -> None:
        self.chains = list(chains)
        self.by_id = {c.id: c for c in self.chains}

    def select(self, alert: Alert) -> Chain:
        for c in self.chains:
            if c.match.fits(alert):
                return c
        raise LookupError(f"no escalation chain for route {alert.route}")  # load refuses this

    def get(self, chain_id: str) -> Chain | None:
        return self.by_id.get(chain_id)


def load_chains(path: Path | None = None) -> Chains:
    """The chains of ``path`` (default: the built-in file), or :class:`ChainFileError`."""
    path = path or builtin_chains()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ChainFileError([f"{path}: {str(e).splitlines()[0]}"]) from None
    if not isinstance(data, dict) or not isinstance(data.get("chains"), list):
        raise ChainFileError([f"{path}: expected a mapping with a list under 'chains'"])
    problems: list[str] = []
    chains: list[Chain] = []
    for i, raw in enumerate(data["chains"], start=1):
        name = raw.get("id", "?") if isinstance(raw, dict) else "?"
        try:
            chains.append(Chain.model_validate(raw))
        except ValidationError as e:
            for err in e.errors(include_url=False):
                loc = ".".join(str(p) for p in err["loc"]) or "chain"
                problems.append(f"{path}: chain {name!r} (#{i}): field {loc!r}: {err['msg']}")
    seen: set[str] = set()
    for c in chains:
        if c.id in seen:
            problems.append(f"{path}: chain {c.id!r}: duplicate id")
        seen.add(c.id)
    for route in ROUTES:
        if chains and not any(c.match.covers_route(route) for c in chains):
            problems.append(f"{path}: no chain matches every alert of route {route!r}")
    if problems:
        raise ChainFileError(problems)
    return Chains(chains)


# ---------------------------------------------------------------------------- timers


@dataclass(frozen=True, slots=True)
class Timer:
    alert_id: int
    chain_id: str
    state: TimerState
    step: int
    started_at: float
    due_at: float
    muted_by: int | None
    claimed_by: str | None = None
    claims: int = 0
    """The claim's token (PostgreSQL): the row's ``claims`` when it was claimed; always 0 on
    SQLite, where nothing is claimed."""

    @classmethod
    def of(cls, row: Row) -> Timer:
        return from_row(cls, row)


CLAIM_BATCH = 50
"""Due timers one PostgreSQL poll claims: the rest are left to the other instances' polls."""


class Timers:
    """The ``escalations`` rows. ``instance``, ``claim_s``: this dispatcher's claims on
    PostgreSQL (:mod:`alerts.claims`)."""

    def __init__(self, db: Writer, instance: str | None = None, claim_s: float = CLAIM_S) -> None:
        self.db = db
        self.instance = instance or instance_id()
        self.claim_s = claim_s
        self.claiming = db.database.dialect == "postgresql"

    def start(
        self, alert_id: int, chain_id: str, state: TimerState, started_at: float, due_at: float
    ) -> bool:
        """A new timer; False when the alert has one already."""
        with self.db.tx() as db:
            cur = db.execute(
                "INSERT INTO escalations (alert_id, chain_id, state, step, started_at,"
                " due_at, updated_at) VALUES (?, ?, ?, 0, ?, ?, ?) ON CONFLICT DO NOTHING",
                (alert_id, chain_id, state, started_at, due_at, started_at),
            )
            return cur.rowcount == 1

    def get(self, alert_id: int) -> Timer | None:
        rows = self.db.query("SELECT * FROM escalations WHERE alert_id = ?", (alert_id,))
        return Timer.of(rows[0]) if rows else None

    def due(self, now: float, limit: int = 200) -> list[Timer]:
        """The timers due at ``now``; on PostgreSQL, claimed by this dispatcher (at most
        :data:`CLAIM_BATCH`; those another one holds are skipped)."""
        if not self.claiming:
            rows = self.db.query(
                "SELECT * FROM escalations WHERE due_at <= ? ORDER BY due_at LIMIT ?", (now, limit)
            )
            return [Timer.of(r) for r in rows]
        with self.db.tx() as db:
            rows = db.execute(
                f"UPDATE escalations SET claimed_by = ?, claim_until = {DB_NOW} + ?,"
                " claims = claims + 1 WHERE alert_id IN (SELECT alert_id FROM escalations"
                f" WHERE due_at <= ? AND {CLAIMABLE} ORDER BY due_at"
                " LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING *",
                (self.instance, self.claim_s, now, min(limit, CLAIM_BATCH)),
            ).fetchall()
        return sorted((Timer.of(r) for r in rows), key=lambda t: (t.due_at, t.alert_id))

    def claim(self, alert_id: int, now: float) -> Timer | None:
        """The alert's timer if it is due at ``now`` and, on PostgreSQL, claimed by this
        dispatcher (None: not due, or another one holds it and takes the step)."""
        if not self.claiming:
            t = self.get(alert_id)
            return t if t is not None and t.due_at <= now else None
        with self.db.tx() as db:
            row = db.execute(
                f"UPDATE escalations SET claimed_by = ?, claim_until = {DB_NOW} + ?,"
                f" claims = claims + 1 WHERE alert_id = ? AND due_at <= ? AND {CLAIMABLE}"
                " RETURNING *",
                (self.instance, self.claim_s, alert_id, now),
            ).fetchone()
        return None if row is None else Timer.of(row)

    def unclaim(self, t: Timer) -> bool:
        """Give up the claim on ``t`` before it expires (its step failed: the next poll takes
        it again rather than after ``claim_s``)."""
        if not self.claiming or t.claimed_by is None:
            return False
        with self.db.tx() as db:
            return (
                db.execute(
                    f"UPDATE escalations SET {RELEASE} WHERE alert_id = ? AND claims = ?"
                    " AND claimed_by = ?",
                    (t.alert_id, t.claims, t.claimed_by),
                ).rowcount
                == 1
            )

    def next_due(self) -> float | None:
        rows = self.db.query("SELECT min(due_at) FROM escalations")
        return rows[0][0] if rows else None

    @staticmethod
    def move(db: Db, t: Timer, now: float, *, keep: bool = False, **changes: Any) -> bool:
        """Compare-and-set inside the caller's transaction: True when ``t`` was still as read
        and still claimed with ``t``'s token (this caller takes the step), False when someone
        else moved or claimed it first. The claim ends with the move, unless ``keep``: the
        caller goes on with the moved timer now (the next stage, the next step due at once)."""
        cols = ", ".join(f"{k} = ?" for k in changes)
        if not keep:
            cols += f", {RELEASE}"
        cur = db.execute(
            f"UPDATE escalations SET {cols}, updated_at = ? WHERE alert_id = ? AND step = ?"
            " AND state = ? AND due_at = ? AND claims = ?",
            (*changes.values(), now, t.alert_id, t.step, t.state, t.due_at, t.claims),
        )
        return cur.rowcount == 1

    @staticmethod
    def finish(db: Db, t: Timer) -> bool:
        cur = db.execute(
            "DELETE FROM escalations WHERE alert_id = ? AND step = ? AND state = ? AND due_at = ?"
            " AND claims = ?",
            (t.alert_id, t.step, t.state, t.due_at, t.claims),
        )
        return cur.rowcount == 1

    def stop(self, alert_id: int) -> bool:
        with self.db.tx() as db:
            return (
                db.execute("DELETE FROM escalations WHERE alert_id = ?", (alert_id,)).rowcount == 1
            )

    def hasten(self, alert_id: int, step: int, now: float) -> bool:
        """Bring step ``step`` forward to now (everyone of the step before is unreachable)."""
        with self.db.tx() as db:
            return (
                db.execute(
                    "UPDATE escalations SET due_at = ?, updated_at = ? WHERE alert_id = ?"
                    " AND step = ? AND state = 'chain' AND due_at > ?",
                    (now, now, alert_id, step, now),
                ).rowcount
                == 1
            )

    def release(self, silence_id: int, now: float) -> int:
        """Alerts muted by ``silence_id`` are looked at again now (it was expired early)."""
        with self.db.tx() as db:
            return db.execute(
                "UPDATE escalations SET due_at = ?, updated_at = ? WHERE muted_by = ?"
                " AND state = 'muted' AND due_at > ?",
                (now, now, silence_id, now),
            ).rowcount

    def page(self, limit: int = 50, offset: int = 0) -> tuple[list[Timer], int]:
        total = int(self.db.query("SELECT count(*) FROM escalations")[0][0])
        rows = self.db.query(
            "SELECT * FROM escalations ORDER BY due_at, alert_id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [Timer.of(r) for r in rows], total

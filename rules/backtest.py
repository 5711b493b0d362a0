"""Backtest: what rules would have raised over a stretch of the journal, next to the rules in
force.

The journal is replayed in id order (the order the rules worker evaluates it) through fresh
engines, on the receive-time axis: the clock is each row's receive time, and the engines tick
at every second of it, as the live worker ticks every second. A warm-up before ``since``
(default 6 h) lets episodes under way, absence timers and count windows build up; alerts the
alert store held open at the warm-up's start are restored into the engines (as the live worker
restores them), so a rule that is already firing is not counted again. Personal baselines are
computed from the journal's rollups as of the replay's time, every 6 h of it (live: hourly; a
14-day median barely moves in between, and each computation reads the whole community's).

"Alerts raised" are counted the way the alert store counts them: a fire while the fingerprint
(rule, device) is open is a rematch, not a new alert; a clear older than the latest match is
ignored; a person's resolve (``resolved_by`` not ``rule``, read from the alert store at its
``resolved_at``) closes the fingerprint then; the flapping gate (given by the caller: it
belongs to alerting) holds the clears of flapping alerts, as live. For the rules in force, the
figures therefore match what the store raised (rule alerts only).

A rule that is the same in both sets is evaluated once; only the rules that differ get engines
of their own. With ``jobs`` > 1 the devices are split by unit (a unit's devices together, so
unit-scope rules see them all) over that many processes, each replaying its share of the
journal; rule state is per device, so the sums are exact.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Final, Protocol

from base import sqlite
from ingest import rows
from registry.models import Registry
from rules.baselines import Baselines, compute, specs_of
from rules.engine import RuleEngine
from rules.model import Rule
from rules.transitions import Transition

__all__ = ["Report", "backtest", "raised_in_store"]

WARMUP_S: Final = 6 * 3600.0
_BATCH: Final = 5000


class Gate(Protocol):
    def filter(self, transitions: Iterable[Transition]) -> list[Transition]: ...
    def tick(self, now: float | None = None) -> list[Transition]: ...


@dataclass
class Report:
    since: float
    until: float
    tz: tzinfo
    new: dict[str, Counter[str]]
    """Per rule of the files tried: alerts raised per local day (``YYYY-MM-DD``)."""
    in_force: dict[str, Counter[str]]
    """The same for the rules in force."""
    actual: dict[str, Counter[str]] | None = None
    """What the alert store raised over the same time (rules in force), when it was given."""
    rows: int = 0
    """Journal rows replayed (warm-up included)."""
    seconds: float = 0.0
    days: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The report for a terminal: per rule, total and per day, and the difference."""
        ids = sorted(set(self.new) | set(self.in_force))
        lines = [
            f"backtest {_day(self.since, self.tz)} .. {_day(self.until - 1e-6, self.tz)}:"
            f" {self.rows} journal rows in {self.seconds:.1f} s",
            "",
            f"{'rule':40} {'tried':>6} {'in force':>9} {'diff':>6}"
            + (f" {'raised':>7}" if self.actual is not None else ""),
        ]
        for rule_id in ids:
            new = sum(self.new[rule_id].values()) if rule_id in self.new else None
            old = sum(self.in_force[rule_id].values()) if rule_id in self.in_force else None
            diff = (new or 0) - (old or 0)
            line = f"{rule_id:40} {_n(new):>6} {_n(old):>9} {diff:>+6}"
            if self.actual is not None:
                line += f" {_n(sum(self.actual.get(rule_id, Counter()).values())):>7}"
            lines.append(line)
        lines += ["", "per day (tried / in force):"]
        for rule_id in ids:
            new_d, old_d = self.new.get(rule_id, Counter()), self.in_force.get(rule_id, Counter())
            if not (new_d or old_d):
                continue
            days = ", ".join(
                f"{d} {new_d[d]}/{old_d[d]}" for d in self.days if new_d[d] or old_d[d]
            )
            lines.append(f"  {rule_id}: {days}")
        return "\n".join(lines)


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)


def _day(t: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d")


class _Tally:
    """Open fingerprints and alerts raised, as the alert store would keep them."""

    def __init__(self, since: float, until: float, tz: tzinfo) -> None:
        self.since, self.until, self.tz = since, until, tz
        self.open: dict[str, tuple[float, float | None]] = {}
        """Open fingerprints: (latest match, when paging of the alert's first fire starts)."""
        self.raised: dict[str, Counter[str]] = {}

    def apply(self, transitions: Sequence[Transition], now: float) -> None:
        for t in transitions:
            fp = t.fingerprint
            found = self.open.get(fp)
            if t.action == "fire":
                if found is None:
                    self.open[fp] = (t.at, t.page_at)
                    if self.since <= now < self.until:
                        self.raised.setdefault(t.rule_id, Counter())[_day(now, self.tz)] += 1
                else:
                    self.open[fp] = (max(found[0], t.at), found[1])
            elif (
                found is not None
                and t.at >= found[0]
                and (t.page_at is None or t.page_at == found[1])  # as the store: see Transition
            ):
                del self.open[fp]


class _Run:
    """One engine over some of the rules, its gate, and the tallies it counts into."""

    def __init__(
        self, engine: RuleEngine, gate: Gate | None, tallies: list[_Tally], ids: set[str]
    ) -> None:
        self.engine, self.gate, self.tallies, self.ids = engine, gate, tallies, ids

    def apply(self, transitions: list[Transition], now: float) -> None:
        if self.gate is not None and transitions:
            transitions = self.gate.filter(transitions)
        if transitions:
            for tally in self.tallies:
                tally.apply(transitions, now)

    def tick(self, now: float) -> None:
        out = self.engine.tick(now)
        if self.gate is not None:
            out = self.gate.filter(out) + self.gate.tick(now)
        if out:
            for tally in self.tallies:
                tally.apply(out, now)


@dataclass(frozen=True)
class _Job:
    journal: Path
    rules: Sequence[Rule]
    in_force: Sequence[Rule]
    registry: Registry
    since: float
    until: float
    tz: tzinfo
    alerts: Path | None
    warmup_s: float
    gate: Callable[[Callable[[], float]], Gate] | None
    baselines_every_s: float
    max_unregistered: int
    jobs: int


Counts = dict[str, Counter[str]]
_JOB: _Job | None = None
"""The job of the forked replay processes (inherited, so nothing is pickled but results)."""


def backtest(
    journal: Path,
    rules: Sequence[Rule],
    in_force: Sequence[Rule],
    registry: Registry,
    *,
    since: float,
    until: float,
    tz: tzinfo,
    alerts: Path | None = None,
    warmup_s: float = WARMUP_S,
    gate: Callable[[Callable[[], float]], Gate] | None = None,
    baselines_every_s: float = 6 * 3600.0,
    max_unregistered: int = 10_000,
    jobs: int = 1,
) -> Report:
    """Replay the journal rows received in [since - warmup_s, until) through ``rules`` and
    ``in_force``; count the alerts each would have raised in [since, until) per rule and day.
    ``jobs`` > 1: in that many processes (forked), each with its share of the devices."""
    global _JOB
    if until <= since:
        raise ValueError("until must be after since")
    t_start = time.perf_counter()
    job = _Job(
        journal, rules, in_force, registry, since, until, tz, alerts, warmup_s, gate,
        baselines_every_s, max_unregistered, max(1, jobs),
    )  # fmt: skip
    if job.jobs == 1:
        parts = [_replay(job, 0)]
    else:
        _JOB = job
        try:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(job.jobs) as pool:
                parts = pool.map(_replay_part, range(job.jobs))
        finally:
            _JOB = None
    new, old, n = _merge(parts)
    new_ids = {r.id for r in rules if r.enabled}
    old_ids = {r.id for r in in_force if r.enabled}
    return Report(
        since,
        until,
        tz,
        {i: new.get(i, Counter()) for i in sorted(new_ids)},
        {i: old.get(i, Counter()) for i in sorted(old_ids)},
        raised_in_store(alerts, old_ids, since, until, tz) if alerts is not None else None,
        n,
        time.perf_counter() - t_start,
        _days(since, until, tz),
    )


def default_jobs() -> int:
    """Processes for a backtest: the cores this process may use, at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def _replay_part(part: int) -> tuple[Counts, Counts, int]:
    assert _JOB is not None
    return _replay(_JOB, part)


def _merge(parts: list[tuple[Counts, Counts, int]]) -> tuple[Counts, Counts, int]:
    new: Counts = {}
    old: Counts = {}
    for p_new, p_old, _ in parts:
        for into, src in ((new, p_new), (old, p_old)):
            for rule_id, days in src.items():
                into.setdefault(rule_id, Counter()).update(days)
    return new, old, sum(p[2] for p in parts)


def _partition(registry: Registry, jobs: int) -> Callable[[str], int]:
    """Device id → its process: by unit when it has one (a unit stays together), else by id."""

    def part(device_id: str) -> int:
        d = registry.devices.get(device_id)
        key = d.unit if d is not None and d.unit else device_id
        return zlib.crc32(key.encode()) % jobs

    return part


def _share(registry: Registry, part: int, of: Callable[[str], int]) -> Registry:
    """The registry with only the devices of one process (absence timers start for those)."""
    devices = [d for d in registry.devices.values() if of(d.device_id) == part]
    return Registry(
        registry.community,
        list(registry.buildings.values()),
        devices,
        list(registry.residents.values()),
        list(registry.staff.values()),
    )


def _replay(job: _Job, part: int) -> tuple[Counts, Counts, int]:
    """One process's replay: the devices of ``part`` (all of them when ``job.jobs`` is 1)."""
    rules, in_force, registry = job.rules, job.in_force, job.registry
    since, until, tz, alerts = job.since, job.until, job.tz, job.alerts
    gate, max_unregistered, baselines_every_s = (
        job.gate,
        job.max_unregistered,
        job.baselines_every_s,
    )
    journal = job.journal
    of = _partition(registry, job.jobs)
    if job.jobs > 1:
        registry = _share(registry, part, of)
    start = since - job.warmup_s
    now = [start]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    new_tally, old_tally = _Tally(since, until, tz), _Tally(since, until, tz)
    same = [r for r in rules if r.enabled and r in in_force]
    groups = [
        (same, [new_tally, old_tally]),
        ([r for r in rules if r.enabled and r not in same], [new_tally]),
        ([r for r in in_force if r.enabled and r not in same], [old_tally]),
    ]
    specs = specs_of([*rules, *in_force])
    runs: list[_Run] = []
    for group, tallies in groups:
        if not group:
            continue
        engine = RuleEngine(group, registry, clock, max_unregistered=max_unregistered, tz=tz)
        runs.append(_Run(engine, gate(clock) if gate else None, tallies, {r.id for r in group}))
    refresh = _baselines(journal, specs, tz, runs, baselines_every_s)
    refresh(start)
    manual: list[tuple[float, str]] = []
    if alerts is not None:
        manual = _seed(alerts, start, until, runs, [new_tally, old_tally])
    m = 0
    n = 0
    next_tick = float(int(start)) + 1.0
    db = sqlite.connect(journal, read_only=True)
    try:
        last_id, top = _first_id(db, start), _last_id(db, until)
        community = registry.community
        query = f"SELECT {rows.COLUMNS} FROM readings WHERE id > ? AND id <= ?"
        args: tuple[object, ...] = (top,)
        if job.jobs > 1:  # this process's devices only, chosen inside SQLite's scan
            mine: dict[str, bool] = {}

            def ours(device_id: str) -> bool:
                ok = mine.get(device_id)
                if ok is None:
                    ok = mine[device_id] = of(device_id) == part
                return ok

            db.create_function("jy_ours", 1, ours, deterministic=True)
            query += " AND jy_ours(device_id)"
        query += " ORDER BY id LIMIT ?"
        while True:
            batch: list[rows.Row] = db.execute(query, (last_id, *args, _BATCH)).fetchall()
            if not batch:
                break
            for row in batch:
                received = row[5]
                if not start <= received < until:
                    continue  # out of receive-time order at either end of the stretch
                t = max(now[0], received)
                while next_tick <= t:  # the live worker ticks every second of receive time
                    m = _advance(next_tick, now, runs, manual, m, [new_tally, old_tally])
                    refresh(next_tick)
                    for run in runs:
                        run.tick(next_tick)
                    next_tick += 1.0
                m = _advance(t, now, runs, manual, m, [new_tally, old_tally])
                r = rows.to_reading(row, community)
                for run in runs:
                    run.apply(run.engine.evaluate(r), t)
                n += 1
            last_id = batch[-1][0]
    finally:
        db.close()
    while next_tick < until:  # the quiet end of the stretch: absences still fire
        m = _advance(next_tick, now, runs, manual, m, [new_tally, old_tally])
        for run in runs:
            run.tick(next_tick)
        next_tick += 1.0
    return new_tally.raised, old_tally.raised, n


def _advance(
    t: float,
    now: list[float],
    runs: list[_Run],
    manual: list[tuple[float, str]],
    m: int,
    tallies: list[_Tally],
) -> int:
    """Move the clock to ``t``, applying people's resolves up to it; returns the next one."""
    now[0] = t
    while m < len(manual) and manual[m][0] <= t:
        fp = manual[m][1]
        for tally in tallies:
            tally.open.pop(fp, None)
        m += 1
    return m


def _baselines(
    journal: Path, specs: set[tuple[str, int, int]], tz: tzinfo, runs: list[_Run], every: float
) -> Callable[[float], None]:
    due = [-float("inf")]

    def refresh(t: float) -> None:
        if not specs or t < due[0]:
            return
        due[0] = t + every
        b: Baselines = compute(journal, specs, tz, t)
        for run in runs:
            run.engine.set_baselines(b)

    return refresh


def _seed(
    alerts: Path, start: float, until: float, runs: list[_Run], tallies: list[_Tally]
) -> list[tuple[float, str]]:
    """Alerts open in the store at ``start`` (restored into the engines and the tallies) and
    the resolves by people after it, oldest first."""
    db = sqlite.connect(alerts, read_only=True)
    try:
        open_rows = db.execute(
            "SELECT rule_id, device_id, fingerprint, started_at, last_match_at, page_at FROM alerts"
            " WHERE raised_at < ?1 AND (resolved_at IS NULL OR resolved_at >= ?1)",
            (start,),
        ).fetchall()
        manual = db.execute(
            "SELECT resolved_at, fingerprint FROM alerts WHERE resolved_by != 'rule'"
            " AND resolved_at >= ? AND resolved_at < ? ORDER BY resolved_at",
            (start, until),
        ).fetchall()
    finally:
        db.close()
    for rule_id, device_id, fp, started_at, last_match, page_at in open_rows:
        for run in runs:
            if rule_id in run.ids:
                run.engine.restore(rule_id, device_id, started_at)
                run.engine.take_dirty()
                for tally in run.tallies:
                    tally.open[fp] = (last_match, page_at)
    return [(float(at), fp) for at, fp in manual]


def _first_id(db: sqlite3.Connection, start: float) -> int:
    """The id before the first row received at or after ``start`` (ids grow with receive
    time, give or take a batch: found by bisection, then stepped back a little)."""
    top = db.execute("SELECT max(id) FROM readings").fetchone()[0] or 0
    lo, hi = 0, int(top)
    while lo < hi:
        mid = (lo + hi) // 2
        found = db.execute(
            "SELECT received FROM readings WHERE id > ? ORDER BY id LIMIT 1", (mid,)
        ).fetchone()
        if found is None or found[0] >= start:
            hi = mid
        else:
            lo = mid + 1
    back = db.execute(
        "SELECT min(id) FROM (SELECT id, received FROM readings WHERE id <= ?"
        " ORDER BY id DESC LIMIT 10000) WHERE received >= ?",
        (lo, start),
    ).fetchone()[0]
    return (int(back) - 1) if back is not None else lo


def _last_id(db: sqlite3.Connection, until: float) -> int:
    """The id of the last row received before ``until`` (give or take a batch: stepped on a
    little past the first row received at or after it)."""
    lo = _first_id(db, until)
    more = db.execute(
        "SELECT max(id) FROM (SELECT id, received FROM readings WHERE id > ?"
        " ORDER BY id LIMIT 10000) WHERE received < ?",
        (lo, until),
    ).fetchone()[0]
    return max(lo, int(more)) if more is not None else lo


def raised_in_store(
    alerts: Path, rule_ids: Iterable[str], since: float, until: float, tz: tzinfo
) -> dict[str, Counter[str]]:
    """Alerts of ``rule_ids`` the store raised in [since, until), per rule and local day."""
    ids = sorted(set(rule_ids))
    out: dict[str, Counter[str]] = {i: Counter() for i in ids}
    db = sqlite.connect(alerts, read_only=True)
    try:
        for rule_id, raised_at in db.execute(
            f"SELECT rule_id, raised_at FROM alerts WHERE raised_at >= ? AND raised_at < ?"
            f" AND rule_id IN ({','.join('?' * len(ids))})",
            (since, until, *ids),
        ):
            out[rule_id][_day(raised_at, tz)] += 1
    finally:
        db.close()
    return out


def _days(since: float, until: float, tz: tzinfo) -> list[str]:
    days: list[str] = []
    t = since
    while t < until:
        d = _day(t, tz)
        if d not in days:
            days.append(d)
        t += 3600
    return days

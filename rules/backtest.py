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
of their own. Rows are evaluated by :class:`rules.replay.FastRows`: a telemetry reading that
leaves a device's rules at rest (the common case) only moves their event times, inline; any
other goes through the engine's own rule code (``fast=False``: every row does, as
``RuleEngine.evaluate`` of the row's reading; tests/unit/test_backtest_fast.py checks both
give the same). With ``jobs`` > 1 the devices are split by unit (a unit's devices together,
so unit-scope rules see them all; devices not in the registry all in the first) over that
many processes, each replaying its share of the journal (chosen inside SQLite's scan); rule
state is per device (or unit), so the sums are exact.

On PostgreSQL (``journal`` a :class:`~ingest.journal_pg.PgJournal`) the same replay reads the
rows received in the stretch in id order from a server-side cursor (each process its own
connection, in a read-only REPEATABLE READ transaction: one snapshot, nothing written, memory
bounded by the batch), through the same row form (:data:`ingest.rows.Row`) and decoding; the
baselines come from :meth:`~ingest.journal_pg.PgJournal.hourly_means` (no rollups there), read
once for the whole stretch before the processes start and kept per device, each refresh taking
its days from that; the alert store is read through :class:`base.sql.Db` (one SQL text for
both stores), once, before the processes start.
Reading a row from the cursor costs about what it costs from SQLite (1.0 µs against 1.4 µs of
CPU); the baselines' read of raw telemetry is what PostgreSQL adds (about 4 µs a row of the
baseline's days; README "Backtest", ``python -m bench.backtest_pg``).

A day of the demo community (bench/rules.py: 3.37 million rows, 4,383 devices, the shipped
pack) takes about 17 s on two cores (user time 31 s); every row through the engine took
28 s (53 s).
"""

from __future__ import annotations

import bisect
import contextlib
import multiprocessing
import os
import sqlite3
import time
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Final, Protocol

from base import sqlite
from base.sql import Db
from district.pg import connect as pg_connect
from ingest import rows
from ingest.journal import SHAPES
from ingest.journal_pg import JSON_PAYLOAD, PgJournal
from ingest.payloads import MAX_AGE_S, MAX_FUTURE_S
from registry.models import Registry
from rules.baselines import Baselines, HourlyMeans, Spec, compute, specs_of
from rules.engine import RuleEngine
from rules.model import Rule
from rules.replay import FastRows
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
class _Seed:
    """What the alert store says about the replay: the alerts open at its start
    (rule_id, device_id, fingerprint, started_at, last_match_at, page_at) and people's
    resolves after it (resolved_at, fingerprint), oldest first."""

    open: list[tuple[str, str, str, float, float, float | None]]
    manual: list[tuple[float, str]]


@dataclass(frozen=True)
class _Job:
    journal: Path | str
    """The SQLite file, or the PostgreSQL journal's URL (each process connects itself)."""
    rules: Sequence[Rule]
    in_force: Sequence[Rule]
    registry: Registry
    since: float
    until: float
    tz: tzinfo
    seed: _Seed | None
    means: HourlyMeans | None
    """PostgreSQL: the hourly means of the whole stretch (:class:`_Means`); SQLite: None (the
    rollups beside the journal)."""
    warmup_s: float
    gate: Callable[[Callable[[], float]], Gate] | None
    baselines_every_s: float
    max_unregistered: int
    jobs: int
    fast: bool


Counts = dict[str, Counter[str]]
_JOB: _Job | None = None
"""The job of the forked replay processes (inherited, so nothing is pickled but results)."""


def backtest(
    journal: Path | PgJournal,
    rules: Sequence[Rule],
    in_force: Sequence[Rule],
    registry: Registry,
    *,
    since: float,
    until: float,
    tz: tzinfo,
    alerts: Path | Db | None = None,
    warmup_s: float = WARMUP_S,
    gate: Callable[[Callable[[], float]], Gate] | None = None,
    baselines_every_s: float = 6 * 3600.0,
    max_unregistered: int = 10_000,
    jobs: int = 1,
    fast: bool = True,
) -> Report:
    """Replay the journal rows received in [since - warmup_s, until) through ``rules`` and
    ``in_force``; count the alerts each would have raised in [since, until) per rule and day.
    ``jobs`` > 1: in that many processes (forked), each with its share of the devices.
    ``fast``: rows that move no rule are evaluated inline (:mod:`rules.replay`); False: every
    row goes through ``RuleEngine.evaluate`` as a reading (the same figures, slower).
    ``journal``: the SQLite file or the PostgreSQL journal; ``alerts``: the alert store (its
    SQLite file, or a connection to it: :class:`base.sql.Db`), None for a replay from
    nothing."""
    global _JOB
    if until <= since:
        raise ValueError("until must be after since")
    t_start = time.perf_counter()
    start = since - warmup_s
    old_ids = {r.id for r in in_force if r.enabled}
    with _alert_db(alerts) as db:  # read once, here: the processes inherit it
        seed = None if db is None else _seed_of(db, start, until)
        actual = None if db is None else raised_in_store(db, old_ids, since, until, tz)
    means: HourlyMeans | None = None
    location: Path | str = journal if isinstance(journal, Path) else journal.url
    if not isinstance(journal, Path):
        means = _Means(journal, specs_of([*rules, *in_force]), start, until)
    job = _Job(
        location, rules, in_force, registry, since, until, tz, seed, means, warmup_s, gate,
        baselines_every_s, max_unregistered, max(1, jobs), fast,
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
    return Report(
        since,
        until,
        tz,
        {i: new.get(i, Counter()) for i in sorted(new_ids)},
        {i: old.get(i, Counter()) for i in sorted(old_ids)},
        actual,
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
    """Device id → its process: by unit when it has one (a unit stays together), else by id;
    devices not in the registry all in the first (the engine bounds how many it keeps of
    them, over all of them)."""

    def part(device_id: str) -> int:
        d = registry.devices.get(device_id)
        if d is None:
            return 0
        return zlib.crc32((d.unit or device_id).encode()) % jobs

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
    since, until, tz = job.since, job.until, job.tz
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
    community = registry.community
    evaluators: list[tuple[_Run, Callable[[rows.Row], list[Transition]]]] = [
        (
            run,
            FastRows(run.engine, community).evaluate
            if job.fast
            else lambda row, e=run.engine: e.evaluate(rows.to_reading(row, community)),  # type: ignore[misc]
        )
        for run in runs
    ]
    means: Path | HourlyMeans
    if job.means is not None:
        means = job.means
    else:
        assert isinstance(journal, Path)  # PostgreSQL's come with the job
        means = journal
    refresh = _baselines(means, specs, tz, runs, baselines_every_s)
    refresh(start)
    manual: list[tuple[float, str]] = []
    if job.seed is not None:
        manual = _restore(job.seed, runs)
    m = 0
    n = 0
    n_manual = len(manual)
    next_tick = float(int(start)) + 1.0
    # part 0: all but the others' devices (devices not registered are its)
    share = None
    if job.jobs > 1:
        share = [d for d in job.registry.devices if (of(d) == part) != (part == 0)]
    batches = (
        _sqlite_batches(journal, start, until, share, part == 0)
        if isinstance(journal, Path)
        else _pg_batches(journal, start, until, share, part == 0)
    )
    with contextlib.closing(batches):
        for batch in batches:
            for row in batch:
                received = row[5]
                if not start <= received < until:
                    continue  # out of receive-time order at either end of the stretch
                t = now[0]
                if received > t:
                    t = received
                while next_tick <= t:  # the live worker ticks every second of receive time
                    m = _advance(next_tick, now, runs, manual, m, [new_tally, old_tally])
                    refresh(next_tick)
                    for run in runs:
                        run.tick(next_tick)
                    next_tick += 1.0
                now[0] = t
                if m < n_manual and manual[m][0] <= t:
                    m = _advance(t, now, runs, manual, m, [new_tally, old_tally])
                for run, evaluate in evaluators:
                    out = evaluate(row)
                    if out:
                        run.apply(out, t)
                n += 1
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
    journal: Path | HourlyMeans,
    specs: set[tuple[str, int, int]],
    tz: tzinfo,
    runs: list[_Run],
    every: float,
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


_OPEN_AT: Final = (
    "SELECT rule_id, device_id, fingerprint, started_at, last_match_at, page_at FROM alerts"
    " WHERE raised_at < ?1 AND (resolved_at IS NULL OR resolved_at >= ?1)"
)
_RESOLVED_BY_PEOPLE: Final = (
    "SELECT resolved_at, fingerprint FROM alerts WHERE resolved_by != 'rule'"
    " AND resolved_at >= ? AND resolved_at < ? ORDER BY resolved_at"
)
"""The alert store's side of a replay: one SQL text for SQLite and PostgreSQL (base/sql.py)."""


def _seed_of(db: Db, start: float, until: float) -> _Seed:
    """Alerts open in the store at ``start`` and the resolves by people after it."""
    return _Seed(
        [
            (str(a), str(b), str(c), float(d), float(e), None if f is None else float(f))
            for a, b, c, d, e, f in db.execute(_OPEN_AT, (start,)).fetchall()
        ],
        [(float(at), str(fp)) for at, fp in db.execute(_RESOLVED_BY_PEOPLE, (start, until))],
    )


def _restore(seed: _Seed, runs: list[_Run]) -> list[tuple[float, str]]:
    """The alerts open at the start restored into the engines and the tallies (as the live
    worker restores them); returns the resolves by people, oldest first."""
    for rule_id, device_id, fp, started_at, last_match, page_at in seed.open:
        for run in runs:
            if rule_id in run.ids:
                run.engine.restore(rule_id, device_id, started_at)
                run.engine.take_dirty()
                for tally in run.tallies:
                    tally.open[fp] = (last_match, page_at)
    return list(seed.manual)


@contextlib.contextmanager
def _alert_db(alerts: Path | Db | None) -> Iterator[Db | None]:
    """The alert store as :class:`base.sql.Db`: a connection given stays the caller's; a
    SQLite file is opened read-only for the block."""
    if not isinstance(alerts, Path):
        yield alerts
        return
    db = sqlite.connect(alerts, read_only=True)
    try:
        yield db
    finally:
        db.close()


def _sqlite_batches(
    journal: Path, start: float, until: float, share: list[str] | None, first: bool
) -> Generator[list[rows.Row]]:
    """The SQLite journal's rows received in about [start, until), in id order, in batches;
    ``share``: only these devices (``first``: all but these)."""
    db = sqlite.connect(journal, read_only=True)
    try:
        last_id, top = _first_id(db, start), _last_id(db, until)
        query = f"SELECT {rows.COLUMNS} FROM readings WHERE id > ? AND id <= ?"
        if share is not None:  # this process's devices only, chosen inside SQLite's scan
            db.execute("CREATE TEMP TABLE jy_part (device_id TEXT PRIMARY KEY) WITHOUT ROWID")
            db.executemany("INSERT INTO temp.jy_part VALUES (?)", ((d,) for d in share))
            # "+": a scan in id order, never the device index (then a sort of each batch)
            query += f" AND +device_id {'NOT IN' if first else 'IN'} temp.jy_part"
        query += " ORDER BY id LIMIT ?"
        while True:
            batch: list[rows.Row] = db.execute(query, (last_id, top, _BATCH)).fetchall()
            if not batch:
                break
            yield batch
            last_id = batch[-1][0]
    finally:
        db.close()


_SHAPE_NAMES: Final = {shape: names for names, shape in SHAPES.items()}
_PG_ROWS: Final = (
    "SELECT id, device_id, shape, ts, received, seq, event, ts_flag, payload FROM readings"
    " WHERE pts >= to_timestamp(%(plo)s) AND pts < to_timestamp(%(phi)s)"
    " AND received >= %(lo)s AND received < %(hi)s"
)
"""Rows received in [lo, hi): a row's ``pts`` (its day) is its event time, which decode
believes only within ``MAX_AGE_S`` before and ``MAX_FUTURE_S`` after its receive time, or the
receive time itself (ingest/journal_pg.py): so only those days' partitions are read."""


def _pg_batches(
    url: str, start: float, until: float, share: list[str] | None, first: bool
) -> Generator[list[rows.Row]]:
    """:func:`_sqlite_batches` of the PostgreSQL journal: one read-only REPEATABLE READ
    transaction on a connection of this process, a server-side cursor in id order (the sort is
    the server's, spilled to disk past ``work_mem``; here only a batch at a time), each row as
    the SQLite journal gives it (:data:`ingest.rows.Row`, as ``journal_pg.rows_after`` makes
    it)."""
    query = _PG_ROWS
    args: dict[str, Any] = {
        "plo": start - MAX_AGE_S,
        "phi": until + MAX_FUTURE_S,
        "lo": start,
        "hi": until,
        "share": share,
    }
    if share is not None:
        query += f" AND {'NOT ' if first else ''}(device_id = ANY(%(share)s))"
    with pg_connect(url, name="jiayuan-backtest") as db:
        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        with db.cursor(name="jiayuan_backtest") as cur:
            cur.itersize = _BATCH
            cur.execute(query + " ORDER BY id", args)
            while found := cur.fetchmany(_BATCH):
                batch: list[rows.Row] = []
                for id_, device_id, shape, ts, received, seq, event, ts_flag, payload in found:
                    kind, stream = _SHAPE_NAMES[shape & ~JSON_PAYLOAD]
                    body = bytes(payload)
                    stored: bytes | str = body.decode() if shape & JSON_PAYLOAD else body
                    batch.append(
                        (id_, device_id, kind, stream, ts, received, seq, event, ts_flag, stored)
                    )
                yield batch
        db.rollback()


class _Means:
    """The hourly means the baselines need over a whole replay, read once from the PostgreSQL
    journal (:meth:`~ingest.journal_pg.PgJournal.hourly_means`: a read of those days' raw
    telemetry) and kept per device in flat arrays; each refresh's :func:`rules.baselines.compute`
    takes its days from here (:class:`rules.baselines.HourlyMeans`) as it takes them from the
    SQLite journal's hourly rollups."""

    def __init__(
        self, journal: HourlyMeans, specs: Iterable[Spec], start: float, until: float
    ) -> None:
        self.by_metric: dict[str, dict[str, tuple[array[float], array[float]]]] = {}
        longest: dict[str, int] = {}
        for metric, days, _ in specs:
            longest[metric] = max(days, longest.get(metric, 0))
        for metric, days in longest.items():
            lo = (start - days * 86_400) // 3600 * 3600
            found = sorted(journal.hourly_means(metric, lo, until // 3600 * 3600))
            table: dict[str, tuple[array[float], array[float]]] = {}
            for device, bucket, mean in found:
                if device not in table:
                    table[device] = (array("d"), array("d"))
                buckets, means = table[device]
                buckets.append(bucket)
                means.append(mean)
            self.by_metric[metric] = table

    def hourly_means(
        self, metric: str, since: float, until: float, device_id: str | None = None
    ) -> list[tuple[str, float, float]]:
        """The hours whose bucket lies in [since, until), as the rollups are read."""
        table = self.by_metric.get(metric, {})
        out: list[tuple[str, float, float]] = []
        for device in table if device_id is None else [device_id]:
            if device not in table:
                continue
            buckets, means = table[device]
            lo, hi = bisect.bisect_left(buckets, since), bisect.bisect_left(buckets, until)
            out += [(device, buckets[i], means[i]) for i in range(lo, hi)]
        return out


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
    alerts: Path | Db, rule_ids: Iterable[str], since: float, until: float, tz: tzinfo
) -> dict[str, Counter[str]]:
    """Alerts of ``rule_ids`` the store raised in [since, until), per rule and local day
    (``alerts``: its SQLite file, or a connection to it)."""
    ids = sorted(set(rule_ids))
    out: dict[str, Counter[str]] = {i: Counter() for i in ids}
    if not ids:
        return out
    with _alert_db(alerts) as db:
        assert db is not None
        for rule_id, raised_at in db.execute(
            f"SELECT rule_id, raised_at FROM alerts WHERE raised_at >= ? AND raised_at < ?"
            f" AND rule_id IN ({','.join('?' * len(ids))})",
            (since, until, *ids),
        ):
            out[rule_id][_day(raised_at, tz)] += 1
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

"""Per-device rollups: for every telemetry metric (:data:`ingest.schema.ROLLUP_METRICS`), the
min, max, sum and count per minute and per hour, kept in the journal next to the raw readings
and longer than them, so that a month's chart of one device reads a few thousand rows.

Maintained by :class:`RollupWorker`, a journal follower: it reads the rows after its cursor and
folds them into ``rollup_1m`` / ``rollup_1h`` in one transaction with the cursor, so each
reading counts once, late ones included (a reading an hour old updates its hour's bucket).
The rows are read and aggregated per minute in Python (:func:`stage`: the compact payloads of
:mod:`ingest.rowcodec` read in well under a microsecond; 4-5 µs of CPU a reading in all,
against ~22 µs when SQLite's ``json_each`` read JSON text), before the write transaction; the
write transaction itself only merges the staged aggregates. In the service the rules worker,
which reads the same rows, hands each batch it read on (:meth:`RollupWorker.offer`): the
rollups fold those instead of reading and decoding the rows a second time, and read the
journal themselves only where no offer covers their cursor (start, catch-up, offers dropped).

:func:`history` answers a chart: the rollup rows up to the cursor plus the few raw rows the
worker has not reached yet, aggregated on the fly, so answers are exact and current.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from functools import reduce
from itertools import chain
from operator import add, itemgetter
from pathlib import Path
from typing import Any, Final

from base.sqlite import transaction
from ingest import rowcodec
from ingest.follower import Follower, WriteLock, connect, head, save_cursor, write_lock
from ingest.rows import Row
from ingest.schema import ROLLUP_METRICS, kinds_with_metric

WIDTHS: Final[dict[str, int]] = {"1m": 60, "1h": 3600}

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollup_series (
    id        INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    metric    TEXT NOT NULL,
    UNIQUE (device_id, metric)
);
""" + "".join(
    f"""
CREATE TABLE IF NOT EXISTS rollup_{step} (
    series INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    vmin   REAL NOT NULL,
    vmax   REAL NOT NULL,
    vsum   REAL NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (series, bucket)
) WITHOUT ROWID;
"""
    for step in WIDTHS
)
"""Rollup tables; ``bucket`` is the bucket's start, epoch seconds."""

_STAGE_SCHEMA = """
CREATE TEMP TABLE IF NOT EXISTS rollup_stage (
    device_id TEXT NOT NULL,
    metric    TEXT NOT NULL,
    bucket    INTEGER NOT NULL,
    vmin      REAL NOT NULL,
    vmax      REAL NOT NULL,
    vsum      REAL NOT NULL,
    n         INTEGER NOT NULL
);
"""
_READ = (
    "SELECT device_id, kind, ts, seq, payload FROM readings"
    " WHERE id > ?1 AND id <= ?2 AND stream = 'telemetry'"
)
_STAGE = "INSERT INTO temp.rollup_stage VALUES (?, ?, ?, ?, ?, ?, ?)"
_METRICS: Final = {kind: frozenset(metrics) for kind, metrics in ROLLUP_METRICS.items()}
_KEYS: Final = {kind: rowcodec.keys_of(metrics) for kind, metrics in ROLLUP_METRICS.items()}
_MAX: Final = 1.7976931348623157e308


def _refuse(name: str) -> Any:
    raise ValueError(name)


_TEXT: Final = json.JSONDecoder(parse_constant=_refuse)
"""A payload kept as JSON text (rows written before compact rows) is read as SQLite's JSON
functions read it: ``NaN`` and ``Infinity`` make it invalid (no values at all), a number past
the range of a double is infinite (that value left out)."""


def _payload(stored: bytes | str, ts: float, seq: int | None) -> dict[str, Any]:
    if stored.__class__ is bytes:
        return rowcodec.load(stored, ts, seq)
    try:
        data = _TEXT.decode(stored)  # type: ignore[arg-type]
    except (ValueError, RecursionError):
        return {}
    return data if data.__class__ is dict else {}


Source = tuple[str, str, float, int | None, bytes | str]
"""A journal row as the rollups read it: (device_id, kind, ts, seq, payload)."""


def stage(db: sqlite3.Connection, after: int, upto: int) -> list[tuple[Any, ...]]:
    """The rows with ids in (after, upto] aggregated per device, metric and minute: (device,
    metric, bucket, min, max, sum, count). Numbers and booleans (as 1 and 0) count; other
    values, and numbers past the range of a double, do not."""
    return fold(db.execute(_READ, (after, upto)).fetchall())


def fold(rows: list[Source]) -> list[tuple[Any, ...]]:
    """:func:`stage` of rows already read (telemetry rows, in id order).

    First by columns (:func:`_fold_columns`: each minute's payloads gathered, then each
    metric's values at once), which answers for rows whose every rolled-up value is a finite
    number; any other row (a string, a number past a double, a payload kept as JSON text)
    makes it give up, and the rows are folded one value at a time (:func:`fold_by_key`).
    Both give the same rows in the same order (tests/unit/test_rollups.py compares them with
    :func:`stage_by_name`). Measured on the benchmark's wearable rows (``python -m
    bench.rollups``, 500 rows a step, read from the journal): 2.8 µs a row one value at a
    time, 2.4 by columns; 1.8 folding rows offered by the rules worker (``--fed``)."""
    staged = _fold_columns(rows)
    return fold_by_key(rows) if staged is None else staged


_NUMBERS: Final = frozenset({int, float, bool})


def _fold_columns(rows: list[Source]) -> list[tuple[Any, ...]] | None:
    """:func:`fold_by_key`'s answer, or None where it may differ (it then folds them)."""
    acc: dict[tuple[str, int], list[Any]] = {}
    find = acc.get
    keys_of = _KEYS.get
    unpack = rowcodec.fields
    for device_id, kind, ts, _seq, stored in rows:
        keys = keys_of(kind)
        if keys is None:
            continue
        if stored.__class__ is not bytes:
            return None  # JSON text: read as SQLite reads it, one row at a time
        at = (device_id, int(ts / 60) * 60)
        group = find(at)
        if group is None:
            acc[at] = [keys, unpack(stored)]
        elif group[0] is keys:
            group.append(unpack(stored))
        else:
            return None  # one device under two kinds in one minute
    out: list[tuple[Any, ...]] = []
    numbers = _NUMBERS
    for (device_id, bucket), group in acc.items():
        keys = group[0]
        payloads = group[1:]
        if keys.keys().isdisjoint(payloads[0]):
            return None  # the minute's first row has no metric: the minute may come later
        found = [(k, keys[k]) for k in dict.fromkeys(chain.from_iterable(payloads)) if k in keys]
        if len({name for _, name in found}) < len(found):
            return None  # a metric under two keys
        columns: Iterable[Sequence[Any]]
        try:  # every payload of the minute has every metric (nearly always): transposed in C
            if len(found) == 1:
                columns = [list(map(itemgetter(found[0][0]), payloads))]
            else:
                columns = zip(*map(itemgetter(*(k for k, _ in found)), payloads), strict=True)
        except KeyError:
            columns = [[d[k] for d in payloads if k in d] for k, _ in found]
        for (_, name), vs in zip(found, columns, strict=True):
            if not numbers.issuperset(map(type, vs)):
                return None
            try:
                fs = list(map(float, vs))
            except OverflowError:  # an integer past a double
                return None
            total = reduce(add, fs)
            if not -_MAX <= total <= _MAX:  # a value infinite or NaN (or the sum past a double)
                return None
            out.append((device_id, name, bucket, min(fs), max(fs), total, len(fs)))
    return out


def fold_by_key(rows: list[Source]) -> list[tuple[Any, ...]]:
    """:func:`fold` one value at a time: a compact payload's fields looked up by their stored
    keys (:func:`rowcodec.fields`), without naming every field first: the same values as
    :func:`_payload` gives, folded in the same order."""
    acc: dict[tuple[str, int], dict[str, list[float]]] = {}
    find = acc.get
    keys_of = _KEYS.get
    unpack = rowcodec.fields
    for device_id, kind, ts, seq, stored in rows:
        keys = keys_of(kind)
        if keys is None:
            continue
        data = unpack(stored) if stored.__class__ is bytes else _payload(stored, ts, seq)
        slot = None
        for key, v in data.items():
            name = keys.get(key)
            if name is None:
                continue
            c = v.__class__
            if c is float:
                if not -_MAX <= v <= _MAX:  # infinite, or NaN
                    continue
            elif c is bool:
                v = 1.0 if v else 0.0
            elif c is int:
                try:
                    v = float(v)
                except OverflowError:  # an integer past a double
                    continue
                if not -_MAX <= v <= _MAX:
                    continue
            else:
                continue
            if slot is None:
                at = (device_id, int(ts / 60) * 60)
                slot = find(at)
                if slot is None:
                    slot = acc[at] = {}
            values = slot.get(name)
            if values is None:
                slot[name] = [v]
            else:
                values.append(v)
    # the first of equal values, as comparing one by one; the sum folded left in row order
    return [
        (device_id, name, bucket, min(vs), max(vs), reduce(add, vs), len(vs))
        for (device_id, bucket), slot in acc.items()
        for name, vs in slot.items()
    ]


def stage_by_name(db: sqlite3.Connection, after: int, upto: int) -> list[tuple[Any, ...]]:
    """:func:`stage` the straightforward way (every payload named in full first), kept as the
    reference the tests compare it with."""
    acc: dict[tuple[str, str, int], list[Any]] = {}
    for device_id, kind, ts, seq, stored in db.execute(_READ, (after, upto)):
        names = _METRICS.get(kind)
        if names is None:
            continue
        data = _payload(stored, ts, seq)
        bucket = int(ts / 60) * 60
        for name in names.intersection(data):
            v = data[name]
            c = v.__class__
            if c is bool:
                v = 1.0 if v else 0.0
            elif c is int or c is float:
                try:
                    v = float(v)
                except OverflowError:  # an integer past a double
                    continue
                if not -_MAX <= v <= _MAX:  # infinite, or NaN
                    continue
            else:
                continue
            a = acc.get((device_id, name, bucket))
            if a is None:
                acc[device_id, name, bucket] = [v, v, v, 1]
            else:
                if v < a[0]:
                    a[0] = v
                if v > a[1]:
                    a[1] = v
                a[2] += v
                a[3] += 1
    return [(*key, *a) for key, a in acc.items()]


_NEW_SERIES = """
INSERT OR IGNORE INTO rollup_series (device_id, metric)
SELECT DISTINCT device_id, metric FROM temp.rollup_stage
"""
_MERGE = """
INSERT INTO rollup_{step} (series, bucket, vmin, vmax, vsum, n)
SELECT s.id, CAST(st.bucket / {width} AS INTEGER) * {width} AS b,
       min(st.vmin), max(st.vmax), total(st.vsum), sum(st.n)
FROM temp.rollup_stage AS st
JOIN rollup_series AS s ON s.device_id = st.device_id AND s.metric = st.metric
WHERE 1 GROUP BY s.id, b
ON CONFLICT (series, bucket) DO UPDATE SET
    vmin = min(vmin, excluded.vmin), vmax = max(vmax, excluded.vmax),
    vsum = vsum + excluded.vsum, n = n + excluded.n
"""
_MERGES = [_MERGE.format(step=step, width=width) for step, width in WIDTHS.items()]

TAIL_SCAN_MAX = 200_000
"""Up to this many rows behind, the not-yet-rolled-up tail is read by id; further behind
(the worker is catching up), through the device's index."""


class RollupWorker(Follower):
    """Folds new journal rows into the rollups, ``batch_rows`` ids per transaction (about
    15 ms of write lock here for 1,000 wearable readings). While catching up it rests as long
    as it worked, so that it takes at most about half a core from a burst of ingestion."""

    name = "rollup"

    def __init__(
        self,
        path: Path,
        *,
        batch_rows: int = 500,
        idle_s: float = 1.0,
        duty: float = 0.5,
        gather_s: float = 0.25,
        fed_max: int = 100_000,
    ) -> None:
        super().__init__(path, idle_s=idle_s)
        self.batch_rows = batch_rows
        self.duty = duty
        self.gather_s = gather_s
        """On its thread, a step less than a full batch behind waits until ``gather_s`` after
        the previous one: a live stream wakes the worker at every ingest commit, and each step
        costs ~150 µs besides its rows (charts are exact meanwhile: :func:`history` adds the
        rows after the cursor)."""
        self._last_step = -math.inf
        self._write_lock = write_lock(path)
        self._fed_staged = 6.0
        """Aggregates staged per row offered, in the last step that folded offered rows."""
        self._fed: deque[tuple[int, int, list[Row]]] = deque()
        """Rows another follower read (:meth:`offer`): (after, upto, every row in (after, upto])."""
        self._fed_rows = 0
        self._fed_lock = threading.Lock()
        self.fed_max = fed_max
        self.from_journal = 0
        """Rows read from the journal (the others came from :meth:`offer`)."""

    def offer(self, after: int, rows: list[Row]) -> None:
        """``rows`` are every journal row with an id in ``(after, rows[-1].id]``, in id order,
        as another follower of this journal read them (the rules worker: rules/sources.py),
        from any thread: the rollups fold them rather than read and decode them again when
        they reach ``after``. Kept up to ``fed_max`` rows (the oldest dropped: read from the
        journal instead); a step that does not reach them reads the journal as before."""
        if not rows:
            return
        with self._fed_lock:
            self._fed.append((after, rows[-1][0], rows))
            self._fed_rows += len(rows)
            while self._fed_rows > self.fed_max:
                self._fed_rows -= len(self._fed.popleft()[2])
            full = self._fed_rows >= self.fed_step
        if full:  # (else it steps when it is next due: woken at every offer, it cost more)
            self.wake()

    @property
    def fed_step(self) -> int:
        """Rows a step folds from what was offered: as many as stage about what
        ``batch_rows`` readings of six metrics each stage at most (the write transaction's
        work, and so how long it holds the journal's write lock), from ``batch_rows`` to four
        times that. A few devices streaming (the benchmark's) stage a few aggregates for
        thousands of rows, and each step costs ~150 µs besides its rows (``python -m
        bench.followers --rollup-batch 500`` against ``2000``: the rollups' thread 3.2-3.4
        µs a row against 2.0-2.6)."""
        rows = int(self.batch_rows * 6 / self._fed_staged)
        return max(self.batch_rows, min(4 * self.batch_rows, rows))

    def _take_fed(self, after: int, upto: int) -> tuple[list[Source], int, int]:
        """From what was offered: the telemetry rows with ids in (after, covered], ``covered``
        (at most ``upto``; ``after`` when nothing offered starts there), and where the first
        offered rows after ``after`` start (``upto`` when none does before): the journal is
        read up to there. Drops what lies at or before ``after``. Offers may overlap and come
        in any order (a rules worker reading again from its committed cursor)."""
        covered, taken = after, []
        with self._fed_lock:
            fed = self._fed
            while fed and fed[0][1] <= after:
                self._fed_rows -= len(fed.popleft()[2])
            more = True
            while more and covered < upto:
                more = False
                for start, end, batch in fed:
                    if start <= covered < end:
                        taken.append((covered, min(end, upto), batch))
                        covered = min(end, upto)
                        more = True
            ahead = min((s for s, _, _ in fed if s > after), default=upto)
        found: list[Source] = [
            (r[1], r[2], r[4], r[6], r[9])
            for lo, hi, batch in taken
            for r in batch
            if lo < r[0] <= hi and r[3] == "telemetry"
        ]
        return found, covered, min(ahead, upto)

    def open(self) -> sqlite3.Connection:
        db = super().open()
        db.executescript(SCHEMA + _STAGE_SCHEMA)
        return db

    def prune(self, before: dict[str, float]) -> int:
        """Drop buckets older than ``before[step]`` (from the scheduler's thread)."""
        db = connect(self.path)
        try:
            return prune_buckets(db, before, lock=write_lock(self.path))
        finally:
            db.close()

    def step(self, db: sqlite3.Connection) -> bool:
        top = head(db)
        if top <= self.position:
            return False
        wait = self._last_step + self.gather_s - time.monotonic()
        if wait > 0 and top - self.position < self.batch_rows and self._on_thread():
            if self._stop.wait(wait):
                return False
            top = head(db)
        self._last_step = time.monotonic()
        t0 = time.perf_counter()
        upto = min(top, self.position + self.fed_step)
        fed, covered, ahead = self._take_fed(self.position, upto)
        waiting = False
        if covered > self.position:  # the rules worker read them: folded as it read them
            staged = fold(fed)
            waiting = covered < upto  # it has not read the rest yet
            self._fed_staged = max(1.0, len(staged)) / (covered - self.position)
            upto = covered
        else:  # the journal, up to what was offered
            upto = min(ahead, self.position + self.batch_rows)
            staged = stage(db, self.position, upto)
            self.from_journal += upto - self.position
        # writes the temp table only: no write lock on the journal; in one transaction, not
        # one per staged row (7 µs each in autocommit)
        with transaction(db, immediate=False):
            db.execute("DELETE FROM temp.rollup_stage")
            db.executemany(_STAGE, staged)
        with self._write_lock, transaction(db):
            db.execute(_NEW_SERIES)
            for merge in _MERGES:
                db.execute(merge)
            save_cursor(db, self.name, upto)
        self.position = upto
        if upto >= top or (waiting and top - upto < self.fed_step):
            return False  # (the rest: offered once the rules worker read it, or read next time)
        if self.duty < 1.0:
            self._stop.wait((time.perf_counter() - t0) * (1.0 - self.duty) / self.duty)
        return not self._stop.is_set()

    def _on_thread(self) -> bool:
        return threading.current_thread() is self._thread


def prune_buckets(
    db: sqlite3.Connection,
    before: dict[str, float],
    pause_s: float = 0.01,
    lock: WriteLock | None = None,
) -> int:
    """Delete rollup buckets older than ``before[step]``, one series at a time, in short
    transactions. Returns the number of rows deleted."""
    total = 0
    series = [r[0] for r in db.execute("SELECT id FROM rollup_series")]
    for step, cutoff in before.items():
        if step not in WIDTHS:
            raise ValueError(f"no rollup step {step!r}")
        for i in range(0, len(series), 200):
            with lock or contextlib.nullcontext(), transaction(db):
                cur = db.executemany(
                    f"DELETE FROM rollup_{step} WHERE series = ? AND bucket < ?",
                    [(s, cutoff) for s in series[i : i + 200]],
                )
                total += max(cur.rowcount, 0)
            time.sleep(pause_s)
    return total


def history(
    db: sqlite3.Connection,
    device_id: str,
    metric: str,
    step: str,
    since: float,
    until: float,
    limit: int,
) -> list[dict[str, Any]] | None:
    """A device's ``metric`` per bucket of ``step`` whose start lies in [since, until) — the
    bucket holding ``since`` counts whole — oldest first: ``{ts, min, max, mean, count}``.
    None when ``metric`` is not rolled up (the caller aggregates raw readings instead)."""
    kinds = kinds_with_metric(metric)
    if not kinds:
        return None
    width = WIDTHS[step]
    lo = since // width * width
    hi = -(-until // width) * width  # buckets starting before ``until``
    cur = db.cursor()
    cur.row_factory = None
    with transaction(db, immediate=False):  # one snapshot: the cursor and the rollups it stands for
        position = _position(cur)
        found = cur.execute(
            "SELECT id FROM rollup_series WHERE device_id = ? AND metric = ?", (device_id, metric)
        ).fetchone()
        table = f"rollup_{step}"
        rows: list[tuple[Any, ...]] = []
        if found is not None:
            rows = cur.execute(
                f"SELECT bucket + 0.0, vmin, vmax, vsum / n, n FROM {table}"
                " WHERE series = ? AND bucket >= ? AND bucket < ? ORDER BY bucket LIMIT ?",
                (found[0], lo, hi, limit),
            ).fetchall()
        tail = _tail(cur, position, device_id, metric, kinds, width, lo, hi)
        if tail:
            rows = _patched(cur, table, None if found is None else found[0], rows, tail, limit)
    return [
        {"ts": b, "min": vmin, "max": vmax, "mean": mean, "count": n}
        for b, vmin, vmax, mean, n in rows
    ]


def _position(cur: sqlite3.Cursor) -> int:
    try:
        row = cur.execute("SELECT last_id FROM cursors WHERE name = ?", (RollupWorker.name,))
    except sqlite3.OperationalError:  # no follower ever ran on this journal
        return 0
    found = row.fetchone()
    return 0 if found is None else int(found[0])


def _tail(
    cur: sqlite3.Cursor,
    position: int,
    device_id: str,
    metric: str,
    kinds: tuple[str, ...],
    width: int,
    lo: float,
    hi: float,
) -> list[tuple[Any, ...]]:
    """The rows after ``position`` aggregated like the rollups."""
    behind = head(cur.connection) - position
    if behind <= 0:
        return []
    # Few rows behind: scan them by id (the unary + keeps SQLite off the device index).
    # Many: the device's index on (device_id, ts) is cheaper.
    where = (
        "id > ?1 AND +device_id = ?2 AND +ts >= ?3 AND +ts < ?4"
        if behind <= TAIL_SCAN_MAX
        else "device_id = ?2 AND ts >= ?3 AND ts < ?4 AND id > ?1"
    )
    marks = ", ".join("?" for _ in kinds)
    return cur.execute(
        f"SELECT CAST(ts / ?5 AS INTEGER) * ?5 AS b, min(v), max(v), total(v), count(v) FROM ("
        f" SELECT ts, json_extract(CASE WHEN json_valid(p) THEN p END, ?6) AS v FROM ("
        f"  SELECT ts, payload_json(payload, ts, seq) AS p"
        f"  FROM readings WHERE {where} AND stream = 'telemetry' AND kind IN ({marks})))"
        " WHERE typeof(v) IN ('integer', 'real')"
        " AND v BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"
        " GROUP BY b ORDER BY b",
        (position, device_id, lo, hi, width, "$." + metric, *kinds),
    ).fetchall()


def _patched(
    cur: sqlite3.Cursor,
    table: str,
    series: int | None,
    rows: list[tuple[Any, ...]],
    tail: list[tuple[Any, ...]],
    limit: int,
) -> list[tuple[Any, ...]]:
    """``rows`` (bucket, min, max, mean, count) with the tail's buckets folded in, exactly: the
    sums of the buckets it touches are read again rather than rebuilt from means."""
    patch = {float(b): (vmin, vmax, vsum, n) for b, vmin, vmax, vsum, n in tail}
    buckets = list(patch) if series is not None else []
    for i in range(0, len(buckets), 500):
        chunk = buckets[i : i + 500]
        for b, vmin, vmax, vsum, n in cur.execute(
            f"SELECT bucket + 0.0, vmin, vmax, vsum, n FROM {table}"
            f" WHERE series = ? AND bucket IN ({', '.join('?' for _ in chunk)})",
            (series, *chunk),
        ):
            t = patch[b]
            patch[b] = (min(t[0], vmin), max(t[1], vmax), t[2] + vsum, t[3] + n)
    merged = [r for r in rows if r[0] not in patch]
    merged.extend((b, vmin, vmax, vsum / n, n) for b, (vmin, vmax, vsum, n) in patch.items())
    merged.sort(key=lambda r: r[0])
    return merged[:limit]

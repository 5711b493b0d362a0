"""Personal baselines: a device's own median of a metric at each local hour of the day, learned
from the journal's hourly rollups (:mod:`ingest.rollups`) over the last N days.

One rollup bucket is one hour of one device: its mean is that hour's value. The baseline at
hour h is the median of those means over the last ``days`` days at hour h (local time), with
the median absolute deviation as its spread; with fewer than ``min_days`` such hours it is
unknown and a rule using it does not apply to that device at that hour.

Computed off the evaluation path (:func:`compute`, a few SQL reads), then handed to the engine
whole: a :class:`Baselines` never changes once built.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Final, Protocol

from base import sqlite

__all__ = ["Baselines", "HourBaseline", "Spec", "compute", "specs_of"]

Spec = tuple[str, int, int]
"""(metric, days, min_days)."""
_HOUR: Final = 3600


@dataclass(frozen=True, slots=True)
class HourBaseline:
    hour: int
    median: float
    spread: float
    """Median absolute deviation of the hourly means."""
    days: int
    """Days with data at this hour."""


class Baselines:
    """Per (device, spec): 24 :class:`HourBaseline` or None, as of ``at``."""

    def __init__(
        self, tz: tzinfo, at: float, table: dict[tuple[str, Spec], list[HourBaseline | None]]
    ) -> None:
        self.tz = tz
        self.at = at
        self.table = table

    def hours(self, device_id: str, spec: Spec) -> list[HourBaseline | None]:
        return self.table.get((device_id, spec)) or [None] * 24

    def level(self, device_id: str, spec: Spec, ts: float) -> float | None:
        """The baseline at the local hour of ``ts``, or None when too little is known."""
        row = self.table.get((device_id, spec))
        if row is None:
            return None
        found = row[datetime.fromtimestamp(ts, self.tz).hour]
        return None if found is None else found.median

    def __len__(self) -> int:
        return len(self.table)


class HourlyMeans(Protocol):
    """A journal that answers the hourly means itself (the PostgreSQL journal, which has no
    rollup tables: :meth:`ingest.journal_pg.PgJournal.hourly_means`)."""

    def hourly_means(
        self, metric: str, since: float, until: float, device_id: str | None = None
    ) -> list[tuple[str, float, float]]: ...


def specs_of(rules: Iterable[object]) -> set[Spec]:
    """The baselines the rules use."""
    from rules.model import ThresholdRule

    return {
        (r.metric, r.baseline.days, r.baseline.min_days)
        for r in rules
        if isinstance(r, ThresholdRule) and r.baseline is not None and r.enabled
    }


def compute(
    journal: Path | sqlite3.Connection | HourlyMeans,
    specs: Iterable[Spec],
    tz: tzinfo,
    at: float,
    device_id: str | None = None,
    floors: Mapping[str, float] | None = None,
) -> Baselines:
    """The baselines of ``specs`` from the hourly rollups of the ``days`` days before ``at``
    (every device, or one); of a device in ``floors``, only the hours from then on (its
    wearer's since: :func:`registry.assignments.floors`). ``journal``: the SQLite file (or
    a connection to it), whose hourly rollups are read; or a journal with ``hourly_means``."""
    if not isinstance(journal, Path | sqlite3.Connection):
        return _compute(journal.hourly_means, specs, tz, at, device_id, floors)
    db = sqlite.connect(journal, read_only=True) if isinstance(journal, Path) else journal

    def read(
        metric: str, since: float, until: float, device: str | None
    ) -> list[tuple[str, float, float]]:
        query = (
            "SELECT s.device_id, r.bucket, r.vsum / r.n FROM rollup_1h AS r"
            " JOIN rollup_series AS s ON s.id = r.series"
            " WHERE s.metric = ? AND r.bucket >= ? AND r.bucket < ? AND r.n > 0"
        )
        args: tuple[object, ...] = (metric, since, until)
        if device is not None:
            query += " AND s.device_id = ?"
            args += (device,)
        try:
            return db.execute(query, args).fetchall()
        except sqlite3.OperationalError:  # no rollups yet on this journal
            return []

    try:
        return _compute(read, specs, tz, at, device_id, floors)
    finally:
        if isinstance(journal, Path):
            db.close()


def _compute(
    read: Callable[[str, float, float, str | None], list[tuple[str, float, float]]],
    specs: Iterable[Spec],
    tz: tzinfo,
    at: float,
    device_id: str | None,
    floors: Mapping[str, float] | None,
) -> Baselines:
    table: dict[tuple[str, Spec], list[HourBaseline | None]] = {}
    for spec in set(specs):
        metric, days, min_days = spec
        rows = read(metric, at - days * 86_400, at // _HOUR * _HOUR, device_id)
        means: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(24)])
        hour_of: dict[float, int] = {}  # a few hundred distinct buckets
        for dev, bucket, mean in rows:
            if floors and bucket < floors.get(dev, bucket):
                continue  # a previous wearer's
            h = hour_of.get(bucket)
            if h is None:
                h = hour_of[bucket] = datetime.fromtimestamp(bucket, tz).hour
            means[dev][h].append(float(mean))
        for dev, by_hour in means.items():
            table[(dev, spec)] = [
                _hour(h, values) if len(values) >= min_days else None
                for h, values in enumerate(by_hour)
            ]
    return Baselines(tz, at, table)


def _hour(h: int, values: list[float]) -> HourBaseline:
    median = statistics.median(values)
    spread = statistics.median(abs(v - median) for v in values)
    return HourBaseline(h, median, spread, len(values))

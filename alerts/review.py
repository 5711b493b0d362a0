"""The weekly review the community's managers do: per ISO week (local time) and optionally per
building, the alerts raised by kind, how long they took to acknowledge and to resolve (median
and 90th percentile, from when jiayuan raised them), the escalations taken, the alerts that
reached nobody, the staff nobody could reach, and the false alarms (resolved as false).

Devices low on battery or offline longest come from the journal (:mod:`jiayuan.api.review`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alerts.messages import title

Query = Callable[[str, Sequence[Any]], Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Durations:
    n: int = 0
    median_s: float | None = None
    p90_s: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Durations:
        if not values:
            return cls()
        ordered = sorted(values)
        p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest rank
        return cls(len(ordered), float(statistics.median(ordered)), float(p90))


@dataclass(slots=True)
class KindRow:
    rule_id: str
    title_zh: str
    title_en: str
    raised: int = 0
    acknowledged: Durations = field(default_factory=Durations)
    resolved: Durations = field(default_factory=Durations)
    escalations: int = 0
    unreached: int = 0
    false_alarms: int = 0


@dataclass(slots=True)
class Review:
    week: str
    building: str | None
    starts_at: float
    ends_at: float
    kinds: list[KindRow]
    total: KindRow
    staff_unreachable: list[tuple[str, int]]
    """(staff id, times raised) in the week."""


def week_bounds(week: str, tz: ZoneInfo) -> tuple[float, float]:
    """``YYYY-Www`` → [Monday 00:00, next Monday 00:00) local time, as epoch seconds."""
    year, _, num = week.partition("-W")
    monday = date.fromisocalendar(int(year), int(num), 1)
    start = datetime.combine(monday, time(0), tz)
    return start.timestamp(), (start + timedelta(days=7)).timestamp()


def weekly(query: Query, week: str, tz: ZoneInfo, building: str | None = None) -> Review:
    start, end = week_bounds(week, tz)
    where = "raised_at >= ? AND raised_at < ?"
    args: list[Any] = [start, end]
    if building is not None:
        where += " AND building = ?"
        args.append(building)
    rows = query(
        "SELECT id, rule_id, raised_at, acknowledged_at, resolved_at, resolved_by, false_alarm"
        f" FROM alerts WHERE {where}",
        args,
    )
    escalations: dict[int, int] = defaultdict(int)
    for alert_id, data, note in query(
        "SELECT h.alert_id, h.data, h.note FROM alert_history h JOIN alerts a"
        f" ON a.id = h.alert_id WHERE {_prefixed(where)} AND h.action = 'escalated'",
        args,
    ):
        if _is_page(data, note):
            escalations[int(alert_id)] += 1
    unreached = _per_alert(
        query,
        "SELECT h.alert_id, count(*) FROM alert_history h JOIN alerts a ON a.id = h.alert_id"
        f" WHERE {_prefixed(where)} AND h.action = 'unreached' GROUP BY h.alert_id",
        args,
    )
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_kind[r["rule_id"]].append(r)
    kinds = [
        _row(rule_id, items, escalations, unreached) for rule_id, items in sorted(by_kind.items())
    ]
    kinds.sort(key=lambda k: (-k.raised, k.rule_id))
    total = _row("*", list(rows), escalations, unreached)
    staff = query(
        "SELECT device_id, count(*) AS n FROM alerts WHERE rule_id = 'staff_unreachable'"
        " AND raised_at >= ? AND raised_at < ? GROUP BY device_id ORDER BY n DESC, device_id",
        [start, end],
    )
    return Review(
        week,
        building,
        start,
        end,
        kinds,
        total,
        [(s["device_id"], int(s["n"])) for s in staff],
    )


def _is_page(data: str | None, note: str) -> bool:
    """An ``escalated`` entry that paged someone: its data's kind (JSON decoded here, not in
    SQL, so the query runs on SQLite and PostgreSQL alike), or in entries from before the data
    was kept, its note."""
    if data is not None:
        return bool(json.loads(data).get("kind") == "page")
    return note.startswith(("step ", "repeat "))


def _prefixed(where: str) -> str:
    return (
        where.replace("raised_at", "a.raised_at").replace("building", "a.building")
        if where
        else "1 = 1"
    )


def _per_alert(query: Query, sql: str, args: Sequence[Any]) -> dict[int, int]:
    return {int(r[0]): int(r[1]) for r in query(sql, args)}


def _row(
    rule_id: str, items: list[Any], escalations: dict[int, int], unreached: dict[int, int]
) -> KindRow:
    ack = [r["acknowledged_at"] - r["raised_at"] for r in items if r["acknowledged_at"]]
    res = [r["resolved_at"] - r["raised_at"] for r in items if r["resolved_at"]]
    zh, en = (title(rule_id, "zh"), title(rule_id, "en")) if rule_id != "*" else ("合计", "All")
    return KindRow(
        rule_id,
        zh,
        en,
        raised=len(items),
        acknowledged=Durations.of(ack),
        resolved=Durations.of(res),
        escalations=sum(escalations.get(r["id"], 0) for r in items),
        unreached=sum(1 for r in items if r["id"] in unreached),
        false_alarms=sum(1 for r in items if r["false_alarm"]),
    )

"""The weekly review (managers, admins): ``GET /api/review?week=YYYY-Www&building=...`` and the
same as CSV (``GET /api/review.csv``) — alerts by kind, time to acknowledge and to resolve
(median, 90th percentile), escalations taken, alerts that reached nobody, staff nobody could
reach, false alarms, and the devices lowest on battery or offline longest (now)."""

from __future__ import annotations

import csv
import io
import time
from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, Field

from alerts.review import Durations, KindRow, Review, weekly
from jiayuan.api.deps import ID_PATTERN, CtxDep, ViewDep, allow
from jiayuan.api.times import utc
from jiayuan.api.view import View
from jiayuan.context import AppContext

router = APIRouter(tags=["review"], dependencies=[allow("admin", "manager", "district_manager")])


def _real_week(week: str | None) -> str | None:
    """A week that exists: W53 only in years that have one, years 1970 to 9998."""
    if week is None:
        return None
    year, _, num = week.partition("-W")
    if not 1970 <= int(year) <= 9998:
        raise ValueError(f"week {week}: the year must be between 1970 and 9998")
    try:
        date.fromisocalendar(int(year), int(num), 1)
    except ValueError:
        raise ValueError(f"week {week} does not exist (year {year} has no week {num})") from None
    return week


Week = Annotated[
    str | None,
    Query(
        pattern=r"^\d{4}-W(0[1-9]|[1-4]\d|5[0-3])$",
        description="ISO week, e.g. `2026-W48` (local time); default: the last full week.",
    ),
    AfterValidator(_real_week),
]
Building = Annotated[str | None, Query(pattern=ID_PATTERN)]
LOW_BATTERY = 20.0
DEVICES_SHOWN = 20


class DurationsOut(BaseModel):
    n: int
    median_s: float | None
    p90_s: float | None


class KindOut(BaseModel):
    rule_id: str = Field(description="`*` for the row of all alerts.")
    title_zh: str
    title_en: str
    raised: int
    acknowledged: DurationsOut = Field(description="Time from raised to acknowledged.")
    resolved: DurationsOut = Field(description="Time from raised to resolved.")
    escalations: int = Field(description="Escalation steps and repeats taken.")
    unreached: int = Field(description="Alerts whose paging reached nobody.")
    false_alarms: int


class DeviceOut(BaseModel):
    device_id: str
    kind: str
    building: str | None
    unit: str | None
    battery: float | None
    online: bool | None
    last_seen: datetime | None
    offline_s: float | None = Field(description="Offline for this long (now).")


class ReviewOut(BaseModel):
    week: str
    building: str | None
    starts_at: datetime
    ends_at: datetime
    kinds: list[KindOut]
    total: KindOut
    staff_unreachable: list[dict[str, Any]] = Field(
        description="`staff_id`, `times`: staff nobody could reach during the week."
    )
    low_battery: list[DeviceOut] = Field(description=f"Battery under {LOW_BATTERY:.0f}%, now.")
    offline_longest: list[DeviceOut] = Field(description="Offline now, longest first.")


def _durations(d: Durations) -> DurationsOut:
    return DurationsOut(n=d.n, median_s=d.median_s, p90_s=d.p90_s)


def _kind(k: KindRow) -> KindOut:
    return KindOut(
        rule_id=k.rule_id,
        title_zh=k.title_zh,
        title_en=k.title_en,
        raised=k.raised,
        acknowledged=_durations(k.acknowledged),
        resolved=_durations(k.resolved),
        escalations=k.escalations,
        unreached=k.unreached,
        false_alarms=k.false_alarms,
    )


def _week(ctx: AppContext, week: str | None) -> str:
    if week is not None:
        return week
    last = datetime.fromtimestamp(time.time() - 7 * 86400, ZoneInfo(ctx.settings.timezone))
    y, w, _ = last.isocalendar()
    return f"{y}-W{w:02d}"


def _devices(ctx: AppContext, building: str | None) -> tuple[list[DeviceOut], list[DeviceOut]]:
    now = time.time()
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        page, total = ctx.journal.list_devices(building=building, limit=500, offset=offset)
        rows += page
        offset += len(page)
        if not page or offset >= total:
            break

    def out(d: dict[str, Any]) -> DeviceOut:
        offline = d["online"] is False
        since = d.get("state_since") or d.get("last_seen")
        return DeviceOut(
            device_id=d["device_id"],
            kind=d["kind"],
            building=d.get("building"),
            unit=d.get("unit"),
            battery=d.get("battery"),
            online=d["online"],
            last_seen=utc(d.get("last_seen")),
            offline_s=round(now - since, 1) if offline and since else None,
        )

    low = sorted(
        (d for d in rows if d.get("battery") is not None and d["battery"] < LOW_BATTERY),
        key=lambda d: (d["battery"], d["device_id"]),
    )
    off = sorted(
        (d for d in rows if d["online"] is False),
        key=lambda d: (d.get("state_since") or d.get("last_seen") or 0.0, d["device_id"]),
    )
    return [out(d) for d in low[:DEVICES_SHOWN]], [out(d) for d in off[:DEVICES_SHOWN]]


def _review(ctx: AppContext, week: str | None, building: str | None) -> ReviewOut:
    r: Review = weekly(
        ctx.alerts.query, _week(ctx, week), ZoneInfo(ctx.settings.timezone), building
    )
    low, off = _devices(ctx, building)
    return ReviewOut(
        week=r.week,
        building=r.building,
        starts_at=utc(r.starts_at),
        ends_at=utc(r.ends_at),
        kinds=[_kind(k) for k in r.kinds],
        total=_kind(r.total),
        staff_unreachable=[{"staff_id": s, "times": n} for s, n in r.staff_unreachable],
        low_battery=low,
        offline_longest=off,
    )


@router.get("/api/review", response_model=ReviewOut, summary="The weekly review")
def get_review(
    ctx: CtxDep, view: ViewDep, week: Week = None, building: Building = None
) -> ReviewOut:
    """One week's figures (Monday 00:00 to Monday 00:00, local time), of one building or all."""
    _whole(view)
    return _review(ctx, week, building)


@router.get(
    "/api/review.csv",
    summary="The weekly review as CSV",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def get_review_csv(
    ctx: CtxDep, view: ViewDep, week: Week = None, building: Building = None
) -> Response:
    """The same figures, one row per alert kind (and a row `*` for all), then the staff
    nobody could reach and the devices low on battery or offline (section column)."""
    _whole(view)
    r = _review(ctx, week, building)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["section", "week", "building", "rule_id", "title_zh", "title_en", "raised",
         "acknowledged", "ack_median_s", "ack_p90_s", "resolved", "resolve_median_s",
         "resolve_p90_s", "escalations", "unreached", "false_alarms"]
    )  # fmt: skip
    for k in [*r.kinds, r.total]:
        w.writerow(
            ["alerts", r.week, r.building or "", k.rule_id, k.title_zh, k.title_en, k.raised,
             k.acknowledged.n, _num(k.acknowledged.median_s), _num(k.acknowledged.p90_s),
             k.resolved.n, _num(k.resolved.median_s), _num(k.resolved.p90_s), k.escalations,
             k.unreached, k.false_alarms]
        )  # fmt: skip
    w.writerow([])
    w.writerow(["section", "week", "building", "staff_id", "times"])
    for s in r.staff_unreachable:
        w.writerow(["staff_unreachable", r.week, r.building or "", s["staff_id"], s["times"]])
    w.writerow([])
    w.writerow(["section", "week", "building", "device_id", "kind", "unit", "battery",
                "offline_s"])  # fmt: skip
    for section, devices in (("low_battery", r.low_battery), ("offline", r.offline_longest)):
        for d in devices:
            w.writerow(
                [section, r.week, d.building or "", d.device_id, d.kind, d.unit or "",
                 _num(d.battery), _num(d.offline_s)]
            )  # fmt: skip
    name = f"review-{r.week}{'-' + r.building if r.building else ''}.csv"
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _whole(view: View) -> None:
    """The review is of the whole installation: with several communities, for those who see
    them all (a district manager, an admin token) — 403 for the others, never another
    community's figures."""
    if view.scope.communities is not None:
        raise HTTPException(
            403,
            "with several communities the weekly review covers them all: it is for district"
            " managers",
        )


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:g}"

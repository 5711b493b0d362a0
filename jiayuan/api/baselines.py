"""``GET /api/devices/{id}/baseline``: a wearer's personal baseline of a metric (the median and
spread of their own hourly values at each hour of the day over the last days) — health data,
so shown only to the wearer's caretakers: the same scope check as the device's readings (404
out of scope, 403 for anyone but the wearer's caretakers)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, cast
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from ingest.journal import Journal
from ingest.journal_pg import PgJournal
from jiayuan.api.deps import ANYONE, ViewDep, allow, refuse
from jiayuan.api.devices import METRIC_PATTERN, DeviceId
from jiayuan.api.times import utc
from jiayuan.api.view import HEALTH_REFUSED
from registry.assignments import floors
from rules.baselines import compute

router = APIRouter(prefix="/api/devices", tags=["devices"], dependencies=[allow(*ANYONE)])


class HourOut(BaseModel):
    hour: int = Field(description="Local hour of the day (the community's time zone).")
    median: float | None = Field(description="Null: fewer than `min_days` days at this hour.")
    spread: float | None = Field(description="Median absolute deviation of the hourly values.")
    days: int = Field(description="Days with data at this hour.")


class BaselineOut(BaseModel):
    device_id: str
    metric: str
    days: int
    min_days: int
    computed_at: datetime
    timezone: str
    now: HourOut = Field(description="The hour of the day it is now.")
    hours: list[HourOut]


@router.get(
    "/{device_id}/baseline",
    response_model=BaselineOut,
    summary="Read a wearer's personal baseline",
    responses={
        403: {"description": "The caller is not a caretaker of the device's wearer"},
        404: {"description": "No such device, or out of the caller's scope"},
    },
)
def get_baseline(
    view: ViewDep,
    device_id: DeviceId,
    metric: Annotated[str, Query(pattern=METRIC_PATTERN, description="e.g. heart_rate")],
    days: Annotated[int, Query(ge=1, le=60)] = 14,
    min_days: Annotated[int, Query(ge=1, le=60)] = 7,
) -> BaselineOut:
    """Per local hour: the median of the device's hourly means over the last `days` days, from
    the hourly rollups."""
    d = view.device(device_id)  # 404 when absent or out of scope
    if not view.scope.sees_readings(device_id, d["kind"]):
        raise HTTPException(403, HEALTH_REFUSED)
    if min_days > days:
        refuse(("query", "min_days"), "min_days must not exceed days", min_days)
    tz_name = view.ctx.settings.timezone
    tz, now = ZoneInfo(tz_name), time.time()
    spec = (metric, days, min_days)
    floor = floors(view.ctx.registry)  # not a previous wearer's
    journal = view.ctx.journal
    # SQLite: the hourly rollups beside the journal; PostgreSQL: from the raw readings
    source = journal.path if isinstance(journal, Journal) else cast(PgJournal, journal)
    table = compute(source, [spec], tz, now, device_id=device_id, floors=floor)
    hours = [
        HourOut(hour=h, median=None, spread=None, days=0)
        if b is None
        else HourOut(hour=h, median=round(b.median, 1), spread=round(b.spread, 1), days=b.days)
        for h, b in enumerate(table.hours(device_id, spec))
    ]
    return BaselineOut(
        device_id=device_id,
        metric=metric,
        days=days,
        min_days=min_days,
        computed_at=utc(now),
        timezone=tz_name,
        now=hours[datetime.fromtimestamp(now, tz).hour],
        hours=hours,
    )

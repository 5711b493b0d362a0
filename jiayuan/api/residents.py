"""``/api/residents``: a caretaker's residents at a glance — where they live, their wearable,
its latest vitals, their open alerts and the day's activity. Read-only, from the registry, the
journal and the alert store.

Residents are pseudonymous (``resident_id``); nothing here names anyone. The vitals and the
day's activity are health data: answered only to the resident's caretakers (others see the
wearable's state: online, battery) and never logged. A caretaker sees their own residents only;
another resident's id answers 404.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from jiayuan.api.alerts import AlertOut, alert_out
from jiayuan.api.bounds import I64_MAX, Instant, plain_number
from jiayuan.api.deps import ID_PATTERN, Limit, Offset, ViewDep, allow
from jiayuan.api.times import utc
from jiayuan.api.view import View
from registry import Registry, Resident

router = APIRouter(
    prefix="/api/residents",
    tags=["residents"],
    dependencies=[allow("admin", "manager", "caretaker")],
)

VITALS: Final = ("heart_rate", "spo2", "skin_temp_c", "battery", "worn", "steps")
LOOKBACK_S: Final = 6 * 3600.0
"""Latest vitals are looked for at least this far back (and since the day's start)."""
MAX_ROWS: Final = 10_000

ResidentId = Annotated[str, Path(pattern=ID_PATTERN, description="The resident's id.")]
DayStart = Annotated[
    Instant | None,
    Query(
        description="Start of the caller's day (RFC 3339 with offset) for the day's "
        "activity; default the server's local midnight."
    ),
]


class Latest(BaseModel):
    value: float | bool
    at: datetime = Field(description="Event time of the reading.")


class Activity(BaseModel):
    day_start: datetime
    steps: int | None = Field(description="Steps since the day's start; null without readings.")
    readings: int = Field(description="Messages of the wearable since the day's start.")
    events: dict[str, int] = Field(description="Wearable events since the day's start (fall…).")


class ResidentOut(BaseModel):
    resident_id: str = Field(description="Pseudonymous.")
    compound: str | None
    building: str
    unit: str
    floor: int | None
    room: str | None
    caretakers: list[str] = Field(description="Staff ids, the primary caretaker first.")
    device_id: str | None = Field(description="The resident's wearable, if one is registered.")
    online: bool | None
    last_seen: datetime | None
    latest: dict[str, Latest] = Field(
        description="Latest value of each vital reported lately (for anyone but the resident's "
        "caretakers: only the wearable's battery)."
    )
    activity: Activity | None = Field(description="Null but for the resident's caretakers.")
    open_alerts: int


class ResidentDetail(ResidentOut):
    alerts: list[AlertOut] = Field(description="The resident's open alerts, most urgent first.")


class ResidentPage(BaseModel):
    items: list[ResidentOut]
    total: int


@router.get("", response_model=ResidentPage, summary="List residents (a caretaker's)")
def list_residents(
    view: ViewDep,
    caretaker: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="Only residents of this staff id.")
    ] = None,
    building: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    day_start: DayStart = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ResidentPage:
    """The residents the caller may see, those with open alerts first, then by building and
    unit."""
    wearables = _wearables(view.ctx.registry)
    open_by_device: dict[str, int] = defaultdict(int)
    for a in view.ctx.alerts.open_alerts():
        open_by_device[a.device_id] += 1

    def open_count(r: Resident) -> int:
        return sum(open_by_device.get(d, 0) for d in wearables.get(r.resident_id, ()))

    chosen = [
        r
        for r in view.residents()
        if (caretaker is None or caretaker in r.caretakers)
        and (building is None or r.building == building)
    ]
    chosen.sort(key=lambda r: (open_count(r) == 0, r.building, r.unit, r.resident_id))
    start = _day_start(day_start)
    items = [
        _resident_out(view, r, wearables, open_count(r), start)
        for r in chosen[offset : offset + limit]
    ]
    return ResidentPage(items=items, total=len(chosen))


@router.get("/{resident_id}", response_model=ResidentDetail, summary="Read a resident")
def get_resident(
    view: ViewDep, resident_id: ResidentId, day_start: DayStart = None
) -> ResidentDetail:
    r = view.resident(resident_id)
    wearables = _wearables(view.ctx.registry)
    alerts = view.open_alerts(wearables.get(resident_id, ()))
    out = _resident_out(view, r, wearables, len(alerts), _day_start(day_start))
    return ResidentDetail(**out.model_dump(), alerts=[alert_out(a) for a in alerts])


def _wearables(registry: Registry) -> dict[str, list[str]]:
    """resident_id → the ids of their registered wearables."""
    out: dict[str, list[str]] = defaultdict(list)
    for d in registry.devices.values():
        if d.kind == "wearable" and d.resident_id:
            out[d.resident_id].append(d.device_id)
    return out


def _day_start(given: datetime | None) -> float:
    if given is not None:
        return given.timestamp()
    now = time.localtime()
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0, 0, 0, -1))


def _resident_out(
    view: View,
    r: Resident,
    wearables: dict[str, list[str]],
    open_alerts: int,
    day_start: float,
) -> ResidentOut:
    ctx = view.ctx
    building = ctx.registry.buildings.get(r.building)
    devices = wearables.get(r.resident_id, [])
    device_id = devices[0] if devices else None
    state = ctx.journal.get_device(device_id) if device_id else None
    latest: dict[str, Latest] = {}
    activity: Activity | None = None
    if device_id is not None and state is not None and view.vitals_of(device_id):
        since = min(day_start, time.time() - LOOKBACK_S)
        rows = view.readings(device_id, since=since, limit=MAX_ROWS)
        latest, activity = summarize(rows, day_start)
    elif state is not None and state["battery"] is not None and state["last_seen"]:
        latest = {"battery": Latest(value=state["battery"], at=utc(state["last_seen"]))}
    return ResidentOut(
        resident_id=r.resident_id,
        compound=building.compound if building else None,
        building=r.building,
        unit=r.unit,
        floor=r.floor,
        room=r.room,
        caretakers=list(r.caretakers),
        device_id=device_id,
        online=state["online"] if state else None,
        last_seen=utc(state["last_seen"]) if state and state["last_seen"] else None,
        latest=latest,
        activity=activity,
        open_alerts=open_alerts,
    )


def summarize(rows: list[dict[str, Any]], day_start: float) -> tuple[dict[str, Latest], Activity]:
    """Latest vitals and the day's activity from raw readings (oldest first, epoch ``ts``).

    ``steps`` is cumulative on the device and may restart (a reboot, a daily reset): the day's
    steps add up each increase, and a drop counts as a restart from zero.
    """
    latest: dict[str, tuple[float | bool, float]] = {}
    events: dict[str, int] = defaultdict(int)
    readings = 0
    steps: int | None = None
    prev: int | None = None
    for row in rows:
        ts, values = row["ts"], row["values"]
        if row["stream"] == "telemetry":
            for name in VITALS:
                v = values.get(name)
                if plain_number(v) and (name not in latest or latest[name][1] <= ts):
                    latest[name] = (v, ts)
            s = values.get("steps")
            if isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= I64_MAX:
                if ts >= day_start and prev is not None:
                    steps = (steps or 0) + (s - prev if s >= prev else s)
                elif ts >= day_start:
                    steps = 0
                prev = s
        if ts >= day_start:
            readings += 1
            if row["stream"] == "event" and row["event"]:
                events[row["event"]] += 1
    return (
        {k: Latest(value=v, at=utc(at)) for k, (v, at) in latest.items()},
        Activity(day_start=utc(day_start), steps=steps, readings=readings, events=dict(events)),
    )

"""``/api/devices``: the devices the journal knows (registered or merely heard), one device
with its open alerts, and a device's readings (raw or per minute / hour) — within the caller's
scope: a device out of it answers 404, a wearable's readings 403 but to the wearer's
caretakers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ingest.journal import Step
from ingest.topics import Kind
from jiayuan.api.alerts import AlertOut, alert_out
from jiayuan.api.deps import (
    ANYONE,
    ID_PATTERN,
    Community,
    Limit,
    Offset,
    Since,
    Until,
    ViewDep,
    allow,
    check_range,
    refuse,
)
from jiayuan.api.times import epoch, utc

router = APIRouter(prefix="/api/devices", tags=["devices"], dependencies=[allow(*ANYONE)])

DeviceId = Annotated[str, Path(pattern=ID_PATTERN, description="The device's id.")]
METRIC_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class DeviceOut(BaseModel):
    device_id: str
    kind: Kind
    community: str | None
    compound: str | None
    building: str | None
    unit: str | None
    floor: int | None
    room: str | None
    resident_id: str | None
    name: str | None
    registered: bool = Field(description="In the registry (else only heard on the broker).")
    first_seen: datetime | None
    last_seen: datetime | None = Field(description="When a message of it was last received.")
    online: bool | None = Field(description="Its last status message; null if it sent none.")
    state_since: datetime | None
    fw: str | None
    battery: float | None


class DeviceDetail(DeviceOut):
    open_alerts: list[AlertOut]


class DevicePage(BaseModel):
    items: list[DeviceOut]
    total: int


class RawReading(BaseModel):
    ts: datetime = Field(description="Event time.")
    received: datetime
    stream: str
    event: str | None
    ts_flag: str | None = Field(description="Set when the device's own time was not believed.")
    values: dict[str, Any] = Field(description="The payload, or only `metric` when given.")


class Bucket(BaseModel):
    ts: datetime = Field(description="Start of the bucket.")
    min: float | None
    max: float | None
    mean: float | None
    count: int


class Readings(BaseModel):
    device_id: str
    metric: str | None
    step: Step
    items: list[RawReading | Bucket]
    truncated: bool = Field(
        description="True when `limit` cut the list: ask again from the last `ts`."
    )


def device_out(d: dict[str, Any]) -> DeviceOut:
    return DeviceOut(
        **{
            **d,
            "first_seen": utc(d["first_seen"]),
            "last_seen": utc(d["last_seen"]),
            "state_since": utc(d["state_since"]),
        }
    )


@router.get("", response_model=DevicePage, summary="List devices")
def list_devices(
    view: ViewDep,
    kind: Kind | None = None,
    building: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    online: bool | None = None,
    registered: bool | None = None,
    community: Community = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> DevicePage:
    items, total = view.devices(
        community=community,
        kind=kind,
        building=building,
        online=online,
        registered=registered,
        limit=limit,
        offset=offset,
    )
    return DevicePage(items=[device_out(d) for d in items], total=total)


@router.get("/{device_id}", response_model=DeviceDetail, summary="Read a device")
def get_device(view: ViewDep, device_id: DeviceId) -> DeviceDetail:
    d = view.device(device_id)
    open_alerts = [alert_out(a) for a in view.open_alerts([device_id])]
    return DeviceDetail(**device_out(d).model_dump(), open_alerts=open_alerts)


@router.get(
    "/{device_id}/readings",
    response_model=Readings,
    summary="Read a device's readings",
    responses={
        403: {
            "description": "A wearable's readings, and the caller is not a caretaker of its wearer"
        }
    },
)
def get_readings(
    view: ViewDep,
    device_id: DeviceId,
    metric: Annotated[
        str | None, Query(pattern=METRIC_PATTERN, description="A payload field, e.g. heart_rate.")
    ] = None,
    since: Since = None,
    until: Until = None,
    step: Annotated[
        Literal["raw", "1m", "1h"], Query(description="`1m`/`1h` aggregate `metric`.")
    ] = "raw",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Readings:
    """Oldest first, in event time. With `step` `1m` or `1h`, `metric` is required and each
    item is one bucket (min, max, mean, count)."""
    check_range(since, until)
    if step != "raw" and metric is None:
        refuse(("query", "metric"), f"metric is required when step is {step}")
    rows = view.readings(
        device_id,
        metric=metric,
        since=epoch(since),
        until=epoch(until),
        step=step,
        limit=limit,
    )
    items: list[RawReading | Bucket]
    if step == "raw":
        items = [
            RawReading(**{**r, "ts": utc(r["ts"]), "received": utc(r["received"])}) for r in rows
        ]
    else:
        items = [Bucket(**{**r, "ts": utc(r["ts"])}) for r in rows]
    return Readings(
        device_id=device_id, metric=metric, step=step, items=items, truncated=len(rows) >= limit
    )

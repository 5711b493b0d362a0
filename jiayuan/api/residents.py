"""``/api/residents``: a caretaker's residents at a glance — where they live, their wearable,
its latest vitals, their open alerts and the day's activity. Read-only, from the registry, the
journal and the alert store.

Residents are pseudonymous (``resident_id``). A resident's ``display_name`` (what their
caretakers call them, from the registry) is answered only to that resident's caretakers and to
managers and admins, and never logged. The vitals and the day's activity are health data:
answered only to the resident's caretakers (others see the wearable's state: online, battery)
and never logged. A caretaker sees their own residents only; another resident's id answers 404.

``GET /api/residents/caretakers`` lists whom a resident list can be asked for: every caretaker
for admins and managers, oneself for a caretaker. Asking for a staff id that is not a caretaker
is refused with a reason, not answered with an empty list.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from jiayuan.api.alerts import AlertOut, alert_out
from jiayuan.api.bounds import I64_MAX, Instant, plain_number
from jiayuan.api.deps import ID_PATTERN, Community, IpDep, Limit, Offset, ViewDep, allow
from jiayuan.api.openapi import ERROR
from jiayuan.api.times import utc
from jiayuan.api.view import View
from registry import Registry, Resident
from registry.labels import MAX_LABEL, labels_in

router = APIRouter(
    prefix="/api/residents",
    tags=["residents"],
    dependencies=[allow("admin", "manager", "district_manager", "caretaker")],
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
    display_name: str | None = Field(
        default=None,
        description="What the resident's caretakers call them; only for the resident's "
        "caretakers, managers and admins (null otherwise, or when the registry has none).",
    )
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


class LabelIn(BaseModel):
    """What the resident's caretakers call them; empty removes the label (the registry's
    ``display_name`` shows again)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(max_length=MAX_LABEL)


class CaretakerOut(BaseModel):
    staff_id: str
    name: str
    residents: int = Field(description="How many residents have this caretaker.")


class CaretakerPage(BaseModel):
    items: list[CaretakerOut]
    total: int


_DIGITS = re.compile(r"(\d+)")


def natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key reading digits as numbers: unit ``1-1-201`` before ``1-1-1101``, ``B2``
    before ``B10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text) if part
    )


@router.get(
    "",
    response_model=ResidentPage,
    summary="List residents (a caretaker's)",
    responses={
        404: {
            "description": "`caretaker` names nobody who looks after residents",
            "content": {"application/json": {"schema": ERROR}},
        }
    },
)
def list_residents(
    view: ViewDep,
    caretaker: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="Only residents of this staff id.")
    ] = None,
    building: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    community: Community = None,
    day_start: DayStart = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ResidentPage:
    """The residents the caller may see, those with open alerts first, then by building and
    unit (numbers read as numbers: 201 before 1101)."""
    if caretaker is not None and view.principal.role in ("admin", "manager", "district_manager"):
        _known_caretaker(view, caretaker)
    wearables = _wearables(view.ctx.registry)
    open_by_device: dict[str, int] = defaultdict(int)
    for a in view.ctx.alerts.open_alerts():
        open_by_device[a.device_id] += 1

    def open_count(r: Resident) -> int:
        return sum(open_by_device.get(d, 0) for d in wearables.get(r.resident_id, ()))

    chosen = [
        r
        for r in view.residents(community)
        if (caretaker is None or caretaker in r.caretakers)
        and (building is None or r.building == building)
    ]
    chosen.sort(
        key=lambda r: (open_count(r) == 0, natural(r.building), natural(r.unit), r.resident_id)
    )
    start = _day_start(day_start)
    labels = labels_in(view.ctx.settings.data_dir, view.audit.store).all()
    items = [
        _resident_out(view, r, wearables, open_count(r), start, labels)
        for r in chosen[offset : offset + limit]
    ]
    return ResidentPage(items=items, total=len(chosen))


@router.get(
    "/caretakers", response_model=CaretakerPage, summary="Caretakers whose residents can be listed"
)
def list_caretakers(view: ViewDep) -> CaretakerPage:
    """Every caretaker with residents (admins, managers), or oneself (a caretaker): the choices
    for ``GET /api/residents?caretaker=``."""
    counts: dict[str, int] = defaultdict(int)
    for r in view.residents():  # communities: of those the caller sees
        for staff_id in r.caretakers:
            counts[staff_id] += 1
    me = view.principal
    staff = view.ctx.registry.staff
    ids = [me.id] if me.role == "caretaker" else [s for s in staff if s in counts]
    items = [
        CaretakerOut(staff_id=s, name=staff[s].name if s in staff else s, residents=counts[s])
        for s in sorted(ids, key=natural)
    ]
    return CaretakerPage(items=items, total=len(items))


def _known_caretaker(view: View, staff_id: str) -> None:
    s = view.ctx.registry.staff.get(staff_id)
    if s is None:
        raise HTTPException(404, f"no staff member '{staff_id}': choose a caretaker from the list")
    if s.role != "caretaker" and not any(
        staff_id in r.caretakers for r in view.ctx.registry.residents.values()
    ):
        raise HTTPException(
            404, f"'{staff_id}' is a {s.role}, not a caretaker: residents have caretakers only"
        )


@router.get("/{resident_id}", response_model=ResidentDetail, summary="Read a resident")
def get_resident(
    view: ViewDep, resident_id: ResidentId, day_start: DayStart = None
) -> ResidentDetail:
    r = view.resident(resident_id)
    wearables = _wearables(view.ctx.registry)
    alerts = view.open_alerts(wearables.get(resident_id, ()))
    labels = labels_in(view.ctx.settings.data_dir, view.audit.store).all()
    out = _resident_out(view, r, wearables, len(alerts), _day_start(day_start), labels)
    return ResidentDetail(**out.model_dump(), alerts=[alert_out(a) for a in alerts])


@router.put(
    "/{resident_id}/label",
    response_model=ResidentDetail,
    summary="Name a resident (their caretakers, managers, admins)",
    responses={403: {"description": "Not one of the resident's caretakers"}},
)
def put_resident_label(
    view: ViewDep, ip: IpDep, resident_id: ResidentId, body: LabelIn
) -> ResidentDetail:
    """What the resident's caretakers call them, shown instead of the registry's display name
    to the same people. The label itself is never logged nor audited, only that it changed."""
    r = view.resident(resident_id)  # 404 out of scope
    if not _may_name(view, r):
        raise HTTPException(403, "only the resident's caretakers and managers may name them")
    labels_in(view.ctx.settings.data_dir, view.audit.store).set(
        resident_id, body.label, view.principal.id
    )
    view.audit.record(view.principal.id, "resident.label", target=resident_id, ip=ip)
    return get_resident(view, resident_id)


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
    labels: dict[str, str],
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
        display_name=(labels.get(r.resident_id) or r.display_name or None)
        if _may_name(view, r)
        else None,
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


def _may_name(view: View, r: Resident) -> bool:
    """A resident's name: for their own caretakers, managers and admins only."""
    me = view.principal
    return me.role in ("admin", "manager", "district_manager") or (
        me.role == "caretaker" and me.id in r.caretakers
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

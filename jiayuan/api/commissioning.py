"""Commissioning: devices that report but are not in the registry, and the one action that
registers such a device to a place (operators, managers, admins).

``GET /api/devices/unregistered`` lists them with their kind (from the topic they publish on),
first and last seen, how many readings the journal holds of them and what they last sent. A
wearable's health values (heart rate, position …) are withheld there as everywhere: its wearer
is not known yet, and what identifies the device (its stream, event, battery, whether it is
worn) is enough to find it. Nothing of it is logged.

``POST /api/devices/unregistered/{device_id}/register`` builds the registry record from the
place given and the kind the device reported as, and applies it like any registry change
(:meth:`RegistryAdmin.edit`: checked, written to the registry files, in force for the device's
next reading and alert, its broker account made, audited as ``device.register``). It is
registered with the way it was first heard (``via``: the profile or push integration that
carried it, none for native MQTT), unless the request names another: from then on readings of
it that come any other way are dead letters, and only a native device gets a broker account.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, get_args

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jiayuan.api.deps import ID_PATTERN, IpDep, Limit, Offset, ViewDep, allow
from jiayuan.api.registry_changes import IN_TURN, BrokerOut, ChangeOut, _admin
from jiayuan.api.times import utc
from jiayuan.api.unreadable import shown
from jiayuan.registry_files import NotWritable
from registry import Device, Registry, RegistryError
from registry.models import DeviceKind

router = APIRouter(
    prefix="/api/devices/unregistered",
    tags=["devices"],
    dependencies=[allow("admin", "manager", "district_manager", "operator")],
)
ACTION: Final = "device.register"
SHOWN_OF_WEARABLES: Final = frozenset({"ts", "seq", "battery", "worn", "event", "state", "fw"})
"""A wearable's fields shown to those who may not see its wearer's health: the rest withheld."""
DeviceId = Annotated[str, Path(pattern=ID_PATTERN, description="The device's id.")]


class LastSent(BaseModel):
    ts: datetime = Field(description="Event time.")
    received: datetime
    stream: str
    event: str | None
    values: dict[str, Any] = Field(description="The payload, less what is withheld.")
    withheld: list[str] = Field(
        default_factory=list,
        description="Fields not shown (a wearable's health values: only its wearer's"
        " caretakers see those, and it has no wearer yet).",
    )


class UnregisteredOut(BaseModel):
    device_id: str
    kind: str = Field(description="From the topic it publishes on.")
    first_seen: datetime | None
    last_seen: datetime | None
    messages: int = Field(description="Readings of it the journal holds.")
    retired: bool = Field(
        description="It was in the registry once (retired since): the journal keeps its old place."
    )
    online: bool | None
    battery: float | None
    via: str | None = Field(
        default=None,
        description="How it was first heard since the service started: the device profile's"
        " or push integration's id; null for native MQTT (or not heard since the start)."
        " Registering it keeps that way in (the registry's via).",
    )
    last: LastSent | None = Field(description="What it sent last.")


class UnregisteredPage(BaseModel):
    items: list[UnregisteredOut]
    total: int


class RegisterIn(BaseModel):
    """Where the device is: a gate at a compound's entrance needs only the compound; a smoke
    detector its building and unit; a wearable its wearer (``resident_id``)."""

    model_config = ConfigDict(extra="forbid")
    compound: str = Field(pattern=ID_PATTERN)
    building: str | None = Field(default=None, pattern=ID_PATTERN)
    unit: str | None = Field(default=None, min_length=1, max_length=32)
    floor: int | None = Field(default=None, ge=-10, le=200)
    room: str | None = Field(default=None, min_length=1, max_length=32)
    resident_id: str | None = Field(default=None, pattern=ID_PATTERN)
    name: str = Field(default="", max_length=80)
    via: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="How it reports (the registry's via): a profile's or integration's id, or"
        " `native`; absent: the way it was first heard (the unregistered list's via).",
    )


def _last(view: ViewDep, d: dict[str, Any]) -> LastSent | None:
    r = view.ctx.journal.last_reading(d["device_id"])
    if r is None:
        return None
    values: dict[str, Any] = r["values"] if isinstance(r["values"], dict) else {}
    withheld: list[str] = []
    if not view.scope.sees_readings(d["device_id"], d["kind"]):
        withheld = sorted(k for k in values if k not in SHOWN_OF_WEARABLES)
        values = {k: v for k, v in values.items() if k in SHOWN_OF_WEARABLES}
    return LastSent(
        ts=utc(r["ts"]),
        received=utc(r["received"]),
        stream=r["stream"],
        event=r["event"],
        values=shown(values),
        withheld=withheld,
    )


@router.get("", response_model=UnregisteredPage, summary="List devices not in the registry")
def list_unregistered(view: ViewDep, limit: Limit = 50, offset: Offset = 0) -> UnregisteredPage:
    """Devices heard on the broker (or pushed) that the registry does not have, by id."""
    items, total = view.devices(registered=False, limit=limit, offset=offset)
    return UnregisteredPage(
        items=[
            UnregisteredOut(
                device_id=d["device_id"],
                kind=d["kind"],
                first_seen=utc(d["first_seen"]),
                last_seen=utc(d["last_seen"]),
                messages=view.ctx.journal.count_readings(d["device_id"]),
                retired=d["compound"] is not None or d["building"] is not None,
                online=None if d["online"] is None else bool(d["online"]),
                battery=d["battery"],
                via=view.ctx.ways.heard(d["device_id"]) if view.ctx.ways is not None else None,
                last=_last(view, d),
            )
            for d in items
        ],
        total=total,
    )


class _AlreadyRegistered(Exception):
    pass


@router.post(
    "/{device_id}/register",
    response_model=ChangeOut,
    summary="Register a reporting device to a place",
    dependencies=[IN_TURN],
    responses={
        404: {"description": "No device of that id has reported"},
        409: {"description": "Already registered, or the place does not fit the registry"},
    },
)
def register_device(view: ViewDep, ip: IpDep, device_id: DeviceId, body: RegisterIn) -> ChangeOut:
    d = view.device(device_id)  # 404 when it never reported (or is out of scope)
    place = body.model_dump(exclude={"via"})
    via = body.via
    if via is None and view.ctx.ways is not None:
        via = view.ctx.ways.heard(device_id)
    try:
        device = Device(
            device_id=device_id,
            kind=_kind(d["kind"]),
            via=None if via == "native" else via,
            **place,
        )
    except ValidationError as e:
        raise HTTPException(422, [err["msg"] for err in e.errors(include_url=False)]) from e

    def edit(reg: Registry) -> Registry:
        if device_id in reg.devices:
            raise _AlreadyRegistered
        return Registry(
            reg.community,
            buildings=list(reg.buildings.values()),
            devices=[*reg.devices.values(), device],
            residents=list(reg.residents.values()),
            staff=list(reg.staff.values()),
        )

    who = view.principal
    try:
        a = _admin(view.ctx).edit(edit, actor=who.id, action=ACTION, ip=ip, target=device_id)
    except _AlreadyRegistered:
        raise HTTPException(409, f"device {device_id!r} is already registered") from None
    except (RegistryError, NotWritable) as e:
        problems = [str(p) for p in e.problems] if isinstance(e, RegistryError) else [str(e)]
        detail = {"message": "the place does not fit the registry", "problems": problems}
        raise HTTPException(409, detail) from e
    return ChangeOut(
        action=ACTION,
        changes=a.diff.summary(),
        diff=a.diff,
        broker=BrokerOut(accounts=a.broker, detail=a.broker_detail, passwords=a.passwords),
        superseded=a.superseded,
    )


def _kind(kind: str) -> DeviceKind:
    for k in get_args(DeviceKind):
        if k == kind:
            out: DeviceKind = k
            return out
    raise HTTPException(409, f"a device of kind {kind!r} cannot be registered")

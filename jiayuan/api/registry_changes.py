"""Changing the registry while the service runs (admins and managers; every change audited).
A manager keeps the roster (places, shifts, caretakers and guards added or removed) but not
what an admin keeps (:func:`staff_refusal`): their own record, admins' and managers' records,
and where anyone is paged — refused with 403 saying why, and audited as refused.

``PUT /api/registry/{section}/{id}`` adds a record or replaces it (a device moved to another
place, a resident's threshold overrides, a staff member's role or channels), ``DELETE`` retires
it, ``PUT``/``POST /api/registry/staff/{id}/shifts`` replace or add a staff member's shifts, and
``POST /api/registry/reload`` reads the registry files again. Each change is checked as the
loader checks the files (409 names the record and field that stand in the way), written to the
registry files, in force for the next reading, alert and request, and answered with what
changed and what became of the broker's accounts — a new device's password is in that answer,
once (and in ``credentials.json``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Final, Literal, NoReturn, TypeVar

import anyio
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from jiayuan.api.deps import ID_PATTERN, CtxDep, IpDep, PrincipalDep, allow, refuse
from jiayuan.auth.scope import Principal
from jiayuan.context import AppContext
from jiayuan.registry_admin import Applied, RegistryAdmin
from jiayuan.registry_files import NotWritable
from registry import Building, Device, Registry, RegistryError, Resident, Shift, Staff
from registry.diff import RegistryDiff

router = APIRouter(
    prefix="/api/registry",
    tags=["registry"],
    dependencies=[allow("admin", "manager", "district_manager")],
    responses={
        409: {"description": "The change does not fit the registry (`problems` name the record"
              " and field), a registry file does not load, or the registry is not kept where a"
              " change can be written"},
        503: {"description": "Registry changes are not available in this process"},
    },
)  # fmt: skip

Section = Literal["buildings", "devices", "residents", "staff"]
_KEY: Final[dict[str, str]] = {
    "buildings": "building",
    "devices": "device_id",
    "residents": "resident_id",
    "staff": "staff_id",
}
_ONE: Final = {
    "buildings": "building",
    "devices": "device",
    "residents": "resident",
    "staff": "staff",
}
RecordId = Annotated[str, Path(pattern=ID_PATTERN)]
MAX_SHIFTS: Final = 64
MAX_PROBLEMS: Final = 100
"""Problems listed in a 409 or 422 (the rest are counted)."""
ADMINS_ONLY: Final = ("admin", "manager", "district_manager")
"""Roles whose staff records only an admin adds, changes or removes."""
T = TypeVar("T")


def staff_refusal(who: Principal, old: Staff | None, new: Staff | None) -> str | None:
    """Why ``who`` may not turn staff record ``old`` into ``new`` (None: added, or removed),
    or None when they may. An admin may change any; anyone else (a manager) may not change
    their own record, nor one whose old or new role is admin or manager, nor where a person is
    paged (``channels``: they would receive what that person is sent, health data too)."""
    if who.role == "admin" or old == new:
        return None
    record = new if new is not None else old
    assert record is not None
    sid = record.staff_id
    if sid == who.id:
        return f"only an admin changes your own staff record ({sid})"
    for s in (old, new):
        if s is not None and s.role in ADMINS_ONLY:
            return f"only an admin adds, changes or removes a {s.role}'s staff record ({sid})"
    if new is not None and new.channels != (old.channels if old is not None else ()):
        return f"only an admin sets where a staff member is paged (channels of {sid})"
    return None


def check_staff(who: Principal, old: Registry, new: Registry) -> None:
    """403 naming why, when ``who`` may not make the staff changes from ``old`` to ``new``."""
    for sid in sorted(old.staff.keys() | new.staff.keys()):
        why = staff_refusal(who, old.staff.get(sid), new.staff.get(sid))
        if why is not None:
            raise HTTPException(403, why)


def listed(problems: list[Any]) -> list[str]:
    """At most :data:`MAX_PROBLEMS` problems, and how many more there are."""
    out = [str(p) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        out.append(f"… and {len(problems) - MAX_PROBLEMS} more problems")
    return out


class BrokerOut(BaseModel):
    accounts: Literal["updated", "unchanged", "not managed", "failed"] = Field(
        description="`updated`: accounts written and the broker reloaded; `not managed`: the"
        " service does not keep the broker's accounts (JIAYUAN_BROKER_ACCOUNTS_DIR unset), a"
        " new device cannot connect until they are made; `failed`: see detail."
    )
    detail: str = ""
    passwords: dict[str, str] = Field(
        default_factory=dict,
        description="New devices' broker passwords (username = device id), shown this once.",
    )


class ChangeOut(BaseModel):
    action: str
    changes: str = Field(description="Counts per section, e.g. `devices +1 -0 ~0`.")
    diff: RegistryDiff
    broker: BrokerOut
    superseded: list[str] = Field(
        default_factory=list,
        description="Registry files the written YAML replaced (moved to `superseded/`).",
    )


async def _in_turn(request: Request) -> AsyncIterator[None]:
    """Registry changes wait their turn here, in the event loop, not on a worker thread: a
    change waiting behind a slow one (hooks, a broker reload of up to 30 s) holds no thread of
    the pool every other route (ack, resolve …) runs on."""
    turn: anyio.Semaphore | None = getattr(request.app.state, "registry_turn", None)
    if turn is None:
        turn = request.app.state.registry_turn = anyio.Semaphore(1)
    async with turn:
        yield


IN_TURN: Final = Depends(_in_turn)


async def _raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(_raw_body)]


def strict(kind: type[T], raw: bytes) -> T:
    """The body read again as strict JSON: FastAPI's lax reading takes ``"3"`` or ``false`` for a
    floor and ``0`` for a time of day; the registry files get only what the schema says."""
    try:
        return TypeAdapter(kind).validate_json(raw, strict=True)
    except ValidationError as e:
        errors = [
            {k: v for k, v in err.items() if k != "ctx"} | {"loc": ("body", *err["loc"])}
            for err in e.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None


def _admin(ctx: AppContext) -> RegistryAdmin:
    if ctx.registry_admin is None:
        raise HTTPException(503, "registry changes are not available in this process")
    return ctx.registry_admin


def _conflict(e: RegistryError | NotWritable) -> NoReturn:
    if isinstance(e, NotWritable):
        raise HTTPException(409, str(e)) from e
    problems = listed(e.problems)
    detail = {"message": "the change does not fit the registry", "problems": problems}
    raise HTTPException(409, detail) from e


def _change(
    ctx: AppContext,
    who: PrincipalDep,
    ip: str,
    action: str,
    target: str,
    edit: Callable[[Registry], Registry],
) -> ChangeOut:
    admin = _admin(ctx)

    def checked(reg: Registry) -> Registry:
        new = edit(reg)
        try:
            check_staff(who, reg, new)
        except HTTPException as e:
            refused(admin, who, ip, action, target, str(e.detail))
            raise
        return new

    try:
        applied = admin.edit(checked, actor=who.id, action=action, ip=ip, target=target)
    except (RegistryError, NotWritable) as e:
        _conflict(e)
    return _out(action, applied)


def refused(
    admin: RegistryAdmin, who: Principal, ip: str, action: str, target: str, why: str
) -> None:
    """Audit a change refused for who asked for it."""
    if admin.audit is not None:
        admin.audit.record(who.id, action, target=target, outcome="refused", ip=ip, problems=[why])


def _out(action: str, a: Applied) -> ChangeOut:
    return ChangeOut(
        action=action,
        changes=a.diff.summary(),
        diff=a.diff,
        broker=BrokerOut(accounts=a.broker, detail=a.broker_detail, passwords=a.passwords),
        superseded=a.superseded,
    )


def _records(reg: Registry, section: str) -> dict[str, Any]:
    records: dict[str, Any] = getattr(reg, section)
    return records


def _with(reg: Registry, section: str, rid: str, record: Any | None) -> Registry:
    """``reg`` with record ``rid`` of ``section`` replaced by ``record`` (None: removed)."""
    parts = {s: dict(_records(reg, s)) for s in _KEY}
    if record is None:
        del parts[section][rid]
    else:
        parts[section][rid] = record
    return Registry(reg.community, **{s: list(v.values()) for s, v in parts.items()})


def _get(ctx: AppContext, section: str, rid: str) -> Any:
    record = _records(ctx.registry, section).get(rid)
    if record is None:
        raise HTTPException(404, f"no {_ONE[section]} {rid!r} in the registry")
    return record


def _put(
    ctx: AppContext, who: PrincipalDep, ip: str, section: str, rid: str, record: Any
) -> ChangeOut:
    if getattr(record, _KEY[section]) != rid:
        refuse(
            ("body", _KEY[section]),
            f"must be {rid!r}, the id in the path",
            getattr(record, _KEY[section]),
        )

    def edit(reg: Registry) -> Registry:
        return _with(reg, section, rid, record)

    verb = "change" if rid in _records(ctx.registry, section) else "add"
    return _change(ctx, who, ip, f"registry.{_ONE[section]}_{verb}", rid, edit)


def _delete(ctx: AppContext, who: PrincipalDep, ip: str, section: str, rid: str) -> ChangeOut:
    def edit(reg: Registry) -> Registry:
        if rid not in _records(reg, section):
            raise HTTPException(404, f"no {_ONE[section]} {rid!r} in the registry")
        return _with(reg, section, rid, None)

    return _change(ctx, who, ip, f"registry.{_ONE[section]}_retire", rid, edit)


# --- devices -----------------------------------------------------------------------------------


@router.get("/devices/{device_id}", response_model=Device, summary="Get a device's record")
def get_device(ctx: CtxDep, device_id: RecordId) -> Device:
    record: Device = _get(ctx, "devices", device_id)
    return record


@router.put(
    "/devices/{device_id}",
    response_model=ChangeOut,
    summary="Add or move a device",
    dependencies=[IN_TURN],
)
def put_device(
    ctx: CtxDep,
    who: PrincipalDep,
    ip: IpDep,
    device_id: RecordId,
    body: Device,
    raw: RawBody,
) -> ChangeOut:
    return _put(ctx, who, ip, "devices", device_id, strict(Device, raw))


@router.delete(
    "/devices/{device_id}",
    response_model=ChangeOut,
    summary="Retire a device",
    dependencies=[IN_TURN],
)
def delete_device(ctx: CtxDep, who: PrincipalDep, ip: IpDep, device_id: RecordId) -> ChangeOut:
    """Its broker account goes; its history and open alerts stay (they can be resolved)."""
    return _delete(ctx, who, ip, "devices", device_id)


# --- residents ---------------------------------------------------------------------------------


@router.get("/residents/{resident_id}", response_model=Resident, summary="Get a resident's record")
def get_resident(ctx: CtxDep, resident_id: RecordId) -> Resident:
    record: Resident = _get(ctx, "residents", resident_id)
    return record


@router.put(
    "/residents/{resident_id}",
    response_model=ChangeOut,
    summary="Add or change a resident",
    dependencies=[IN_TURN],
)
def put_resident(
    ctx: CtxDep,
    who: PrincipalDep,
    ip: IpDep,
    resident_id: RecordId,
    body: Resident,
    raw: RawBody,
) -> ChangeOut:
    """Threshold overrides and the allowed area count from the resident's next reading."""
    return _put(ctx, who, ip, "residents", resident_id, strict(Resident, raw))


@router.delete(
    "/residents/{resident_id}",
    response_model=ChangeOut,
    summary="Remove a resident",
    dependencies=[IN_TURN],
)
def delete_resident(ctx: CtxDep, who: PrincipalDep, ip: IpDep, resident_id: RecordId) -> ChangeOut:
    return _delete(ctx, who, ip, "residents", resident_id)


# --- staff and their shifts --------------------------------------------------------------------


@router.get("/staff/{staff_id}", response_model=Staff, summary="Get a staff member's record")
def get_staff(ctx: CtxDep, staff_id: RecordId) -> Staff:
    record: Staff = _get(ctx, "staff", staff_id)
    return record


@router.put(
    "/staff/{staff_id}",
    response_model=ChangeOut,
    summary="Add or change a staff member",
    dependencies=[IN_TURN],
)
def put_staff(
    ctx: CtxDep,
    who: PrincipalDep,
    ip: IpDep,
    staff_id: RecordId,
    body: Staff,
    raw: RawBody,
) -> ChangeOut:
    return _put(ctx, who, ip, "staff", staff_id, strict(Staff, raw))


@router.delete(
    "/staff/{staff_id}",
    response_model=ChangeOut,
    summary="Remove a staff member",
    dependencies=[IN_TURN],
)
def delete_staff(ctx: CtxDep, who: PrincipalDep, ip: IpDep, staff_id: RecordId) -> ChangeOut:
    """Their sessions end, their tokens are revoked and their password deleted at once (a new
    hire given the same id later starts with none); they are paged no more."""
    return _delete(ctx, who, ip, "staff", staff_id)


def _shifts(
    ctx: AppContext,
    who: PrincipalDep,
    ip: str,
    staff_id: str,
    action: str,
    shifts: Callable[[tuple[Shift, ...]], tuple[Shift, ...]],
) -> ChangeOut:
    def edit(reg: Registry) -> Registry:
        s = reg.staff.get(staff_id)
        if s is None:
            raise HTTPException(404, f"no staff {staff_id!r} in the registry")
        new = shifts(s.shifts)
        if len(new) > MAX_SHIFTS:
            refuse(("body",), f"at most {MAX_SHIFTS} shifts per person", len(new))
        return _with(reg, "staff", staff_id, s.model_copy(update={"shifts": new}))

    return _change(ctx, who, ip, action, staff_id, edit)


@router.get(
    "/staff/{staff_id}/shifts", response_model=list[Shift], summary="List a staff member's shifts"
)
def list_shifts(ctx: CtxDep, staff_id: RecordId) -> list[Shift]:
    s: Staff = _get(ctx, "staff", staff_id)
    return list(s.shifts)


@router.post(
    "/staff/{staff_id}/shifts",
    response_model=ChangeOut,
    status_code=201,
    summary="Add a shift to a staff member",
    dependencies=[IN_TURN],
)
def add_shift(
    ctx: CtxDep, who: PrincipalDep, ip: IpDep, staff_id: RecordId, body: Shift, raw: RawBody
) -> ChangeOut:
    """In force for the next alert routed: who is paged follows the roster as changed."""
    shift = strict(Shift, raw)
    return _shifts(ctx, who, ip, staff_id, "registry.shift_add", lambda old: (*old, shift))


@router.put(
    "/staff/{staff_id}/shifts",
    response_model=ChangeOut,
    summary="Replace a staff member's shifts",
    dependencies=[IN_TURN],
)
def put_shifts(
    ctx: CtxDep,
    who: PrincipalDep,
    ip: IpDep,
    staff_id: RecordId,
    body: Annotated[list[Shift], Body(max_length=MAX_SHIFTS)],
    raw: RawBody,
) -> ChangeOut:
    shifts = tuple(strict(list[Shift], raw))
    return _shifts(ctx, who, ip, staff_id, "registry.shift_replace", lambda _old: shifts)


# --- buildings ---------------------------------------------------------------------------------


@router.put(
    "/buildings/{building}",
    response_model=ChangeOut,
    summary="Add or change a building",
    dependencies=[IN_TURN],
)
def put_building(
    ctx: CtxDep,
    who: PrincipalDep,
    ip: IpDep,
    building: RecordId,
    body: Building,
    raw: RawBody,
) -> ChangeOut:
    return _put(ctx, who, ip, "buildings", building, strict(Building, raw))


@router.delete(
    "/buildings/{building}",
    response_model=ChangeOut,
    summary="Remove a building",
    dependencies=[IN_TURN],
)
def delete_building(ctx: CtxDep, who: PrincipalDep, ip: IpDep, building: RecordId) -> ChangeOut:
    return _delete(ctx, who, ip, "buildings", building)


# --- the files ---------------------------------------------------------------------------------


@router.post(
    "/reload",
    response_model=ChangeOut,
    summary="Read the registry files again",
    dependencies=[IN_TURN],
)
def reload_registry(ctx: CtxDep, who: PrincipalDep, ip: IpDep) -> ChangeOut:
    """As SIGHUP to ``jiayuan run``. A file that does not load is refused (409 names the file,
    row or line and field) and the running registry stays."""
    try:
        applied = _admin(ctx).reload(actor=who.id, ip=ip)
    except (RegistryError, NotWritable) as e:
        _conflict(e)
    return _out("registry.reload", applied)

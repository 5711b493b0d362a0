"""``/api/silences``: silences and maintenance windows — create, list, read, expire.

A muted alert is still raised and recorded; nobody is paged while the silence holds (its history
says which silence). A silence that could match a critical rule must name the device: refused
with 422 otherwise. Expiring one early pages, at once, what it held back and is still firing.

Admins, managers and operators set and expire silences; security staff may read them. The
author (and who expires one) is the caller, from their credentials: ``author``/``by`` in a
request are optional and refused (422) when they name someone else. Both are audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from alerts.dispatch import Dispatcher
from alerts.silences import Silence, SilenceNotFound, SilenceRefused
from jiayuan.api.alerts import check_by
from jiayuan.api.bounds import I64_MAX, LATEST, Instant
from jiayuan.api.deps import ID_PATTERN, CtxDep, IpDep, Limit, Offset, ViewDep, allow, refuse
from jiayuan.api.times import epoch, utc
from rules.model import parse_duration

ALERTING_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"description": "Alerting (routing, silences, escalation) is not running"}
}
router = APIRouter(prefix="/api/silences", tags=["silences"], responses=ALERTING_DOWN)
READERS = allow("admin", "manager", "district_manager", "operator", "security")
WRITERS = allow("admin", "manager", "district_manager", "operator")

SilenceId = Annotated[int, Path(ge=1, le=I64_MAX, description="The silence's id.")]
State = Literal["active", "pending", "expired"]
OptId = Annotated[str | None, Field(default=None, pattern=ID_PATTERN)]


def get_alerting(ctx: CtxDep) -> Dispatcher:
    if ctx.alerting is None:
        raise HTTPException(503, "alerting (routing, silences, escalation) is not running")
    return ctx.alerting


AlertingDep = Annotated[Dispatcher, Depends(get_alerting)]


class SilenceIn(BaseModel):
    """Matchers (at least one; every one given must equal the alert's), when, why and who."""

    model_config = ConfigDict(extra="forbid")

    rule_id: OptId = None
    kind: OptId = None
    device_id: OptId = None
    building: OptId = None
    starts_at: Instant | None = Field(
        default=None, description="Default now; later for a planned maintenance window."
    )
    ends_at: Instant | None = Field(default=None, description="Or give `duration`.")
    duration: str | None = Field(
        default=None, max_length=32, description="From `starts_at`, e.g. `2h`, `30m`, `1h30m`."
    )
    reason: str = Field(min_length=1, max_length=500)
    author: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Optional: the caller (from the credentials) is the author.",
    )


class ExpireIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Optional: the caller (from the credentials) ends it.",
    )


class SilenceOut(BaseModel):
    id: int
    rule_id: str | None
    kind: str | None
    device_id: str | None
    building: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    author: str
    created_at: datetime
    expired_at: datetime | None
    expired_by: str | None
    state: State


class SilencePage(BaseModel):
    items: list[SilenceOut]
    total: int


def silence_out(s: Silence, now: float) -> SilenceOut:
    state: State = (
        "expired"
        if s.expired_at is not None or s.ends_at <= now
        else "active"
        if s.active(now)
        else "pending"
    )
    return SilenceOut(
        id=s.id,
        rule_id=s.rule_id,
        kind=s.kind,
        device_id=s.device_id,
        building=s.building,
        starts_at=utc(s.starts_at),
        ends_at=utc(s.ends_at),
        reason=s.reason,
        author=s.author,
        created_at=utc(s.created_at),
        expired_at=utc(s.expired_at),
        expired_by=s.expired_by,
        state=state,
    )


@router.get("", response_model=SilencePage, summary="List silences", dependencies=[READERS])
def list_silences(
    alerting: AlertingDep,
    state: Annotated[State | None, Query(description="`active`, `pending` or `expired`.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> SilencePage:
    """Newest first."""
    now = alerting.clock()
    items, total = alerting.silences.page(now=now, state=state, limit=limit, offset=offset)
    return SilencePage(items=[silence_out(s, now) for s in items], total=total)


@router.post(
    "",
    response_model=SilenceOut,
    status_code=201,
    summary="Create a silence or a maintenance window",
    responses={422: {"description": "No matcher, bad times, or it could hide a critical alarm"}},
    dependencies=[WRITERS],
)
def create_silence(view: ViewDep, ip: IpDep, alerting: AlertingDep, body: SilenceIn) -> SilenceOut:
    who = view.principal
    check_by(who, ("body", "author"), body.author)
    now = alerting.clock()
    starts = epoch(body.starts_at) or now
    if body.ends_at is not None and body.duration is not None:
        refuse(("body", "duration"), "give ends_at or duration, not both", body.duration)
    if body.ends_at is not None:
        ends = body.ends_at.timestamp()
    elif body.duration is not None:
        try:
            ends = min(starts + parse_duration(body.duration), LATEST.timestamp())
        except (ValueError, OverflowError) as e:
            refuse(("body", "duration"), str(e), body.duration)
    else:
        refuse(("body", "ends_at"), "give ends_at or duration", None)
    try:
        s = alerting.silences.create(
            starts_at=starts,
            ends_at=ends,
            reason=body.reason,
            author=who.id,
            now=now,
            rule_id=body.rule_id,
            kind=body.kind,
            device_id=body.device_id,
            building=body.building,
        )
    except SilenceRefused as e:
        refuse(("body", e.field), str(e), getattr(body, e.field, None))
    view.audit.record(
        who.id,
        "silence.create",
        target=str(s.id),
        ip=ip,
        rule_id=s.rule_id,
        kind=s.kind,
        device_id=s.device_id,
        building=s.building,
        starts_at=s.starts_at,
        ends_at=s.ends_at,
    )
    return silence_out(s, now)


@router.get(
    "/{silence_id}", response_model=SilenceOut, summary="Read a silence", dependencies=[READERS]
)
def get_silence(alerting: AlertingDep, silence_id: SilenceId) -> SilenceOut:
    try:
        return silence_out(alerting.silences.get(silence_id), alerting.clock())
    except SilenceNotFound as e:
        raise HTTPException(404, str(e)) from None


def _expire(
    view: ViewDep,
    ip: str,
    alerting: Dispatcher,
    silence_id: int,
    by: str | None,
    where: tuple[str, ...],
) -> SilenceOut:
    who = view.principal
    check_by(who, where, by)
    try:
        s = alerting.expire_silence(silence_id, who.id)
    except SilenceNotFound as e:
        raise HTTPException(404, str(e)) from None
    view.audit.record(who.id, "silence.expire", target=str(silence_id), ip=ip)
    return silence_out(s, alerting.clock())


@router.post(
    "/{silence_id}/expire",
    response_model=SilenceOut,
    summary="Expire a silence now",
    responses={404: {"description": "No such silence"}},
    dependencies=[WRITERS],
)
def expire_silence(
    view: ViewDep,
    ip: IpDep,
    alerting: AlertingDep,
    silence_id: SilenceId,
    body: ExpireIn | None = None,
) -> SilenceOut:
    """Ends it now (an expired one stays as it is: 200). Alerts it held back that are still
    firing are paged at once."""
    return _expire(view, ip, alerting, silence_id, body.by if body else None, ("body", "by"))


@router.delete(
    "/{silence_id}",
    response_model=SilenceOut,
    summary="Expire a silence now (the same as POST …/expire)",
    responses={404: {"description": "No such silence"}},
    dependencies=[WRITERS],
)
def delete_silence(
    view: ViewDep,
    ip: IpDep,
    alerting: AlertingDep,
    silence_id: SilenceId,
    by: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="Optional: the caller ends it.")
    ] = None,
) -> SilenceOut:
    """Silences are kept as a record: this expires it, it does not erase it."""
    return _expire(view, ip, alerting, silence_id, by, ("query", "by"))

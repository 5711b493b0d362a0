"""``/api/silences``: silences and maintenance windows — create, list, read, expire.

A muted alert is still raised and recorded; nobody is paged while the silence holds (its history
says which silence). A silence that could match a critical rule must name the device: refused
with 422 otherwise. Expiring one early pages, at once, what it held back and is still firing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from alerts.dispatch import Dispatcher
from alerts.model import RULE, SYSTEM
from alerts.silences import Silence, SilenceNotFound, SilenceRefused
from jiayuan.api.deps import ID_PATTERN, CtxDep, Limit, Offset, refuse
from jiayuan.api.times import epoch, utc
from rules.model import parse_duration

router = APIRouter(prefix="/api/silences", tags=["silences"])

SilenceId = Annotated[int, Path(ge=1, description="The silence's id.")]
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
    starts_at: AwareDatetime | None = Field(
        default=None, description="Default now; later for a planned maintenance window."
    )
    ends_at: AwareDatetime | None = Field(default=None, description="Or give `duration`.")
    duration: str | None = Field(
        default=None, description="From `starts_at`, e.g. `2h`, `30m`, `1h30m`."
    )
    reason: str = Field(min_length=1, max_length=500)
    author: str = Field(pattern=ID_PATTERN, description="The staff id of who sets it.")


class ExpireIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field(pattern=ID_PATTERN, description="The staff id of who ends it.")


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


def _check_staff(ctx: CtxDep, where: tuple[str, ...], who: str) -> None:
    if who in (RULE, SYSTEM):
        refuse(where, f"'{who}' is reserved for the service, not a staff id", who)
    if ctx.registry.staff and who not in ctx.registry.staff:
        refuse(where, f"unknown staff id '{who}'", who)


@router.get("", response_model=SilencePage, summary="List silences")
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
)
def create_silence(ctx: CtxDep, alerting: AlertingDep, body: SilenceIn) -> SilenceOut:
    _check_staff(ctx, ("body", "author"), body.author)
    now = alerting.clock()
    starts = epoch(body.starts_at) or now
    if body.ends_at is not None and body.duration is not None:
        refuse(("body", "duration"), "give ends_at or duration, not both", body.duration)
    if body.ends_at is not None:
        ends = body.ends_at.timestamp()
    elif body.duration is not None:
        try:
            ends = starts + parse_duration(body.duration)
        except ValueError as e:
            refuse(("body", "duration"), str(e), body.duration)
    else:
        refuse(("body", "ends_at"), "give ends_at or duration", None)
    try:
        s = alerting.silences.create(
            starts_at=starts,
            ends_at=ends,
            reason=body.reason,
            author=body.author,
            now=now,
            rule_id=body.rule_id,
            kind=body.kind,
            device_id=body.device_id,
            building=body.building,
        )
    except SilenceRefused as e:
        refuse(("body", e.field), str(e), getattr(body, e.field, None))
    return silence_out(s, now)


@router.get("/{silence_id}", response_model=SilenceOut, summary="Read a silence")
def get_silence(alerting: AlertingDep, silence_id: SilenceId) -> SilenceOut:
    try:
        return silence_out(alerting.silences.get(silence_id), alerting.clock())
    except SilenceNotFound as e:
        raise HTTPException(404, str(e)) from None


def _expire(ctx: CtxDep, alerting: Dispatcher, silence_id: int, by: str) -> SilenceOut:
    _check_staff(ctx, ("body", "by"), by)
    try:
        s = alerting.expire_silence(silence_id, by)
    except SilenceNotFound as e:
        raise HTTPException(404, str(e)) from None
    return silence_out(s, alerting.clock())


@router.post(
    "/{silence_id}/expire",
    response_model=SilenceOut,
    summary="Expire a silence now",
    responses={404: {"description": "No such silence"}},
)
def expire_silence(
    ctx: CtxDep, alerting: AlertingDep, silence_id: SilenceId, body: ExpireIn
) -> SilenceOut:
    """Ends it now (an expired one stays as it is: 200). Alerts it held back that are still
    firing are paged at once."""
    return _expire(ctx, alerting, silence_id, body.by)


@router.delete(
    "/{silence_id}",
    response_model=SilenceOut,
    summary="Expire a silence now (the same as POST …/expire)",
    responses={404: {"description": "No such silence"}},
)
def delete_silence(
    ctx: CtxDep,
    alerting: AlertingDep,
    silence_id: SilenceId,
    by: Annotated[str, Query(pattern=ID_PATTERN, description="The staff id of who ends it.")],
) -> SilenceOut:
    """Silences are kept as a record: this expires it, it does not erase it."""
    return _expire(ctx, alerting, silence_id, by)

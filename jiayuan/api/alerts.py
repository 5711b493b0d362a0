"""``/api/alerts``: list, read (with history), acknowledge and resolve."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from alerts import Alert, AlertNotFound, HistoryEntry, InvalidTransition, Sort, Status
from alerts.model import RULE, SYSTEM, Action
from jiayuan.api.deps import (
    ID_PATTERN,
    AlertsDep,
    CtxDep,
    Limit,
    Offset,
    Since,
    Until,
    check_range,
    refuse,
)
from jiayuan.api.times import epoch, rfc3339, utc
from rules.matches import Route, Severity, Signal

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, description="The alert's id.")]


class HistoryOut(BaseModel):
    id: int
    at: datetime
    action: Action
    by: str = Field(description="A staff id, `rule` or `system`.")
    note: str


class AlertOut(BaseModel):
    id: int
    fingerprint: str = Field(description="`rule_id:device_id`; one open alert per fingerprint.")
    rule_id: str
    device_id: str
    kind: str
    severity: Severity
    signal: Signal
    route: Route
    summary: str
    status: Status
    labels: dict[str, str]
    started_at: datetime = Field(description="Event time the condition started.")
    last_match_at: datetime = Field(description="Event time of the latest match.")
    raised_at: datetime = Field(description="When jiayuan raised the alert.")
    updated_at: datetime
    ended_at: datetime | None = Field(description="Event time the rule cleared, if it did.")
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None = Field(description="A staff id, or `rule` when it cleared.")
    late: bool = Field(description="Raised from readings that arrived late.")
    offline: bool = Field(description="The device is offline; the alert stays open.")
    offline_since: datetime | None
    match_count: int
    value: float | None = Field(description="The value of the latest match, if any.")


class AlertDetail(AlertOut):
    history: list[HistoryOut]


class AlertPage(BaseModel):
    items: list[AlertOut]
    total: int


class AlertActionIn(BaseModel):
    """Who acts (until staff sign in; then it comes from the credentials) and why."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(pattern=ID_PATTERN, description="The staff id of the person acting.")
    note: str = Field(default="", max_length=2000)


def history_out(h: HistoryEntry) -> HistoryOut:
    return HistoryOut(id=h.id, at=utc(h.at), action=h.action, by=h.by, note=h.note)


def alert_out(a: Alert) -> AlertOut:
    return AlertOut(
        id=a.id,
        fingerprint=a.fingerprint,
        rule_id=a.rule_id,
        device_id=a.device_id,
        kind=a.kind,
        severity=a.severity,
        signal=a.signal,
        route=a.route,
        summary=a.summary,
        status=a.status,
        labels=a.labels,
        started_at=utc(a.started_at),
        last_match_at=utc(a.last_match_at),
        raised_at=utc(a.raised_at),
        updated_at=utc(a.updated_at),
        ended_at=utc(a.ended_at),
        acknowledged_at=utc(a.acknowledged_at),
        acknowledged_by=a.acknowledged_by,
        resolved_at=utc(a.resolved_at),
        resolved_by=a.resolved_by,
        late=a.late,
        offline=a.offline,
        offline_since=utc(a.offline_since),
        match_count=a.match_count,
        value=a.value,
    )


def alert_detail(a: Alert) -> AlertDetail:
    return AlertDetail(**alert_out(a).model_dump(), history=[history_out(h) for h in a.history])


@router.get("", response_model=AlertPage, summary="List alerts")
def list_alerts(
    store: AlertsDep,
    status: Annotated[list[Status] | None, Query(description="One or more statuses.")] = None,
    severity: Annotated[list[Severity] | None, Query(description="One or more.")] = None,
    kind: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    building: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    device_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    rule_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    since: Since = None,
    until: Until = None,
    sort: Annotated[Sort, Query(description="`priority`: open and most urgent first.")] = (
        "priority"
    ),
    limit: Limit = 50,
    offset: Offset = 0,
) -> AlertPage:
    """Alerts, most urgent open ones first by default. `since`/`until` bound the event time
    the condition started."""
    check_range(since, until)
    items, total = store.list(
        status=status,
        severity=severity,
        kind=kind,
        building=building,
        device_id=device_id,
        rule_id=rule_id,
        since=epoch(since),
        until=epoch(until),
        sort=sort,
        limit=limit,
        offset=offset,
    )
    return AlertPage(items=[alert_out(a) for a in items], total=total)


@router.get("/{alert_id}", response_model=AlertDetail, summary="Read an alert and its history")
def get_alert(store: AlertsDep, alert_id: AlertId) -> AlertDetail:
    try:
        return alert_detail(store.get(alert_id))
    except AlertNotFound as e:
        raise HTTPException(404, str(e)) from None


@router.post(
    "/{alert_id}/ack",
    response_model=AlertDetail,
    summary="Acknowledge an alert",
    responses={
        404: {"description": "No such alert"},
        409: {"description": "Resolved, or acknowledged by someone else"},
    },
)
def ack_alert(ctx: CtxDep, alert_id: AlertId, body: AlertActionIn) -> AlertDetail:
    """`firing` → `acknowledged`. Repeating it as the same person changes nothing (200)."""
    _check_staff(ctx, body.by)
    try:
        ctx.alerts.acknowledge(alert_id, body.by, body.note)
        return alert_detail(ctx.alerts.get(alert_id))
    except AlertNotFound as e:
        raise HTTPException(404, str(e)) from None
    except InvalidTransition as e:
        raise HTTPException(409, _conflict(e)) from None


@router.post(
    "/{alert_id}/resolve",
    response_model=AlertDetail,
    summary="Resolve an alert",
    responses={
        404: {"description": "No such alert"},
        409: {"description": "Already resolved by someone else or by the rule"},
    },
)
def resolve_alert(ctx: CtxDep, alert_id: AlertId, body: AlertActionIn) -> AlertDetail:
    """`firing` or `acknowledged` → `resolved`. Repeating it as the same person changes
    nothing (200)."""
    _check_staff(ctx, body.by)
    try:
        ctx.alerts.resolve(alert_id, body.by, body.note)
        return alert_detail(ctx.alerts.get(alert_id))
    except AlertNotFound as e:
        raise HTTPException(404, str(e)) from None
    except InvalidTransition as e:
        raise HTTPException(409, _conflict(e)) from None


def _check_staff(ctx: CtxDep, by: str) -> None:
    if by in (RULE, SYSTEM):
        refuse(("body", "by"), f"'{by}' is reserved for the service, not a staff id", by)
    staff = ctx.registry.staff
    if staff and by not in staff:
        refuse(("body", "by"), f"unknown staff id '{by}'", by)


def _conflict(e: InvalidTransition) -> str:
    when = rfc3339(e.at) if e.at is not None else None
    who = "the rule (its condition cleared)" if e.by == RULE else (e.by or "someone")
    done = f"already {e.status} by {who}" + (f" at {when}" if when else "")
    return f"alert {e.alert_id} is {done}; it cannot be {_PAST[e.action]}"


_PAST = {"acknowledge": "acknowledged", "resolve": "resolved"}

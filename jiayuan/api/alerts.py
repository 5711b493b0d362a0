"""``/api/alerts``: list, read (with history), acknowledge and resolve — each within the
caller's scope (another caretaker's resident's alert answers 404).

The name on an acknowledgement or a resolution is the caller's, from their credentials. The
body's ``by`` is optional and kept only for older clients: when given it must be the caller's
own staff id, else the request is refused (422) rather than recorded under a name nobody
proved."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from alerts import Alert, AlertNotFound, HistoryEntry, InvalidTransition, Sort, Status
from alerts.messages import title
from alerts.model import RULE, Action
from jiayuan.api.bounds import I64_MAX
from jiayuan.api.deps import (
    ANYONE,
    ID_PATTERN,
    Community,
    IpDep,
    Limit,
    Offset,
    Since,
    Until,
    ViewDep,
    allow,
    check_range,
    refuse,
)
from jiayuan.api.times import epoch, rfc3339, utc
from jiayuan.auth.scope import Principal
from registry import Registry
from rules.transitions import Route, Severity, Signal

router = APIRouter(prefix="/api/alerts", tags=["alerts"], dependencies=[allow(*ANYONE)])

AlertId = Annotated[int, Path(ge=1, le=I64_MAX, description="The alert's id.")]


class PagedPerson(BaseModel):
    staff_id: str
    name: str = Field(description="The staff member's display name from the registry.")
    role: str | None
    reason: str = Field(description="Why this person (the selector that named them).")
    new: bool = Field(description="Not paged before about this alert's incident.")
    outcome: str = Field(
        description="`sent`; `held` (folded into one message, sent within seconds); `merged` "
        "(into a message waiting for them); `coalesced` (already paged for this incident); "
        "`reminded` (reminded less than a minute ago); `skipped` (a step passed over)."
    )


class DeliveryNote(BaseModel):
    staff_id: str
    name: str
    channel: str = Field(description="The channel, secrets masked.")
    step: int = Field(description="1-based chain step; 0 for a follow-up.")
    purpose: str
    outcome: str = Field(description="`delivered`, `retrying` or `failed`.")
    attempt: int
    error: str


class HistoryOut(BaseModel):
    id: int
    at: datetime
    action: Action
    by: str = Field(description="A staff id, `rule` or `system`.")
    note: str
    kind: str | None = Field(
        default=None,
        description="The structured kind of a paging entry: `page` (a step was taken: "
        "`people`), `skipped` (a step passed over: nobody new), `unreached` (nobody at all), "
        "`delivery` (one message's outcome: `delivery`), `incident`, `false_alarm`.",
    )
    step: int | None = Field(default=None, description="1-based chain step of a paging entry.")
    steps: int | None = None
    purpose: str | None = Field(
        default=None, description="`notify`, `escalate`, `repeat` or `update`."
    )
    fallback: bool = Field(
        default=False, description="The step paged the security desk and the duty manager."
    )
    people: list[PagedPerson] = Field(default_factory=list)
    delivery: DeliveryNote | None = None


class RelatedDevice(BaseModel):
    device_id: str
    kind: str | None
    building: str | None
    unit: str | None
    floor: int | None
    room: str | None


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
    value: float | None = Field(
        description="The value of the latest match, if any (a wearable's: only for the "
        "wearer's caretakers)."
    )
    incident_id: int | None = Field(
        default=None, description="The incident it belongs to (GET /api/incidents/{id})."
    )
    title_zh: str = Field(default="", description="The alert kind's title in Chinese.")
    title_en: str = Field(default="", description="The alert kind's title in English.")
    false_alarm: bool = Field(default=False, description="Resolved by a person as false.")
    related_devices: list[RelatedDevice] = Field(
        default_factory=list,
        description="The devices behind an alert that is not one device's (a confirmed "
        "fire's detectors), with their place.",
    )


class AlertDetail(AlertOut):
    history: list[HistoryOut]


class AlertPage(BaseModel):
    items: list[AlertOut]
    total: int


class AlertActionIn(BaseModel):
    """Why (the note). Who acts comes from the credentials."""

    model_config = ConfigDict(extra="forbid")

    by: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Optional and ignored when it is the caller's own staff id; any other id is "
        "refused (422): the name recorded is always the signed-in caller's.",
    )
    note: str = Field(default="", max_length=2000)
    false_alarm: bool = Field(
        default=False,
        description="Resolve only: nothing was wrong (counted in the weekly review).",
    )


def history_out(h: HistoryEntry) -> HistoryOut:
    d = h.data or {}
    kind = d.get("kind")
    return HistoryOut(
        id=h.id,
        at=utc(h.at),
        action=h.action,
        by=h.by,
        note=h.note,
        kind=kind,
        step=d.get("step") if kind != "delivery" else None,
        steps=d.get("steps"),
        purpose=d.get("purpose"),
        fallback=bool(d.get("fallback", False)),
        people=[PagedPerson.model_validate(p) for p in d.get("people", ())],
        delivery=DeliveryNote.model_validate(d) if kind == "delivery" else None,
    )


def related_devices(a: Alert, registry: Registry | None) -> list[RelatedDevice]:
    """The devices named in ``labels.devices`` (a confirmed fire's detectors)."""
    ids = [d for d in a.labels.get("devices", "").split(",") if d]
    out: list[RelatedDevice] = []
    for device_id in ids:
        d = registry.device(device_id) if registry is not None else None
        if registry is not None and d is None:
            continue  # not a device id (a building's trouble counts its devices here)
        out.append(
            RelatedDevice(
                device_id=device_id,
                kind=d.kind if d else None,
                building=d.building if d else None,
                unit=d.unit if d else None,
                floor=d.floor if d else None,
                room=d.room if d else None,
            )
        )
    return out


NOT_SHOWN: Final = frozenset({"page_at", "history"})
"""Fields of :class:`alerts.Alert` that :class:`AlertOut` leaves out: ``page_at`` is the
dispatcher's (when paging may start), ``history`` is :class:`AlertDetail`'s, in its own shape."""
API_ONLY: Final = frozenset({"title_zh", "title_en", "related_devices"})
"""Fields of :class:`AlertOut` that are not the alert's own (made here for the reader)."""
_SHOWN: Final = tuple(name for name in AlertOut.model_fields if name not in API_ONLY)
_TIMES: Final = frozenset(
    name for name, f in AlertOut.model_fields.items() if f.annotation in (datetime, datetime | None)
)


def alert_out(a: Alert, registry: Registry | None = None) -> AlertOut:
    """The alert as the API shows it: every field but :data:`NOT_SHOWN`, times in UTC."""
    values = {
        name: utc(getattr(a, name)) if name in _TIMES else getattr(a, name) for name in _SHOWN
    }
    return AlertOut(
        **values,
        title_zh=title(a.rule_id, "zh", a.summary),
        title_en=title(a.rule_id, "en", a.summary),
        related_devices=related_devices(a, registry),
    )


def alert_detail(a: Alert, registry: Registry | None = None) -> AlertDetail:
    return AlertDetail(
        **alert_out(a, registry).model_dump(), history=[history_out(h) for h in a.history]
    )


@router.get("", response_model=AlertPage, summary="List alerts")
def list_alerts(
    view: ViewDep,
    status: Annotated[list[Status] | None, Query(description="One or more statuses.")] = None,
    severity: Annotated[list[Severity] | None, Query(description="One or more.")] = None,
    kind: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    building: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    device_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    rule_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    community: Community = None,
    since: Since = None,
    until: Until = None,
    sort: Annotated[Sort, Query(description="`priority`: open and most urgent first.")] = (
        "priority"
    ),
    limit: Limit = 50,
    offset: Offset = 0,
) -> AlertPage:
    """Alerts the caller may see, most urgent open ones first by default. `since`/`until`
    bound the event time the condition started."""
    check_range(since, until)
    items, total = view.alerts(
        status=status,
        severity=severity,
        kind=kind,
        building=building,
        device_id=device_id,
        rule_id=rule_id,
        community=community,
        since=epoch(since),
        until=epoch(until),
        sort=sort,
        limit=limit,
        offset=offset,
    )
    return AlertPage(items=[alert_out(a, view.ctx.registry) for a in items], total=total)


@router.get("/{alert_id}", response_model=AlertDetail, summary="Read an alert and its history")
def get_alert(view: ViewDep, alert_id: AlertId) -> AlertDetail:
    return alert_detail(view.alert(alert_id), view.ctx.registry)


@router.post(
    "/{alert_id}/ack",
    response_model=AlertDetail,
    summary="Acknowledge an alert",
    responses={
        404: {"description": "No such alert (or not one the caller may see)"},
        409: {"description": "Resolved, or acknowledged by someone else"},
    },
)
def ack_alert(view: ViewDep, ip: IpDep, alert_id: AlertId, body: AlertActionIn) -> AlertDetail:
    """`firing` → `acknowledged`, in the caller's name. Repeating it as the same person changes
    nothing (200)."""
    return _act(view, ip, alert_id, body, "acknowledge")


@router.post(
    "/{alert_id}/resolve",
    response_model=AlertDetail,
    summary="Resolve an alert",
    responses={
        404: {"description": "No such alert (or not one the caller may see)"},
        409: {"description": "Already resolved by someone else or by the rule"},
    },
)
def resolve_alert(view: ViewDep, ip: IpDep, alert_id: AlertId, body: AlertActionIn) -> AlertDetail:
    """`firing` or `acknowledged` → `resolved`, in the caller's name. Repeating it as the same
    person changes nothing (200)."""
    return _act(view, ip, alert_id, body, "resolve")


def _act(view: ViewDep, ip: str, alert_id: int, body: AlertActionIn, action: str) -> AlertDetail:
    who = view.principal
    check_by(who, ("body", "by"), body.by)
    view.alert(alert_id)  # 404 unless the caller may see it
    store = view.ctx.alerts
    try:
        if action == "acknowledge":
            change = store.acknowledge(alert_id, who.id, body.note)
        else:
            change = store.resolve(alert_id, who.id, body.note, false_alarm=body.false_alarm)
    except AlertNotFound as e:
        raise HTTPException(404, str(e)) from None
    except InvalidTransition as e:
        view.audit.record(
            who.id,
            f"alert.{action}",
            target=str(alert_id),
            outcome="refused",
            ip=ip,
            status=e.status,
        )
        raise HTTPException(409, _conflict(e)) from None
    if change is not None:
        view.audit.record(
            who.id,
            f"alert.{action}",
            target=str(alert_id),
            ip=ip,
            rule_id=change.alert.rule_id,
            device_id=change.alert.device_id,
            via=who.via,
            false_alarm=change.alert.false_alarm or None,
        )
    return alert_detail(view.alert(alert_id), view.ctx.registry)


def check_by(who: Principal, where: tuple[str, ...], given: str | None) -> None:
    """Refuse a body or query naming someone other than the caller (see the module doc)."""
    if given is not None and given != who.id:
        refuse(
            where,
            f"'{given}' is not you: you are signed in as '{who.id}', and the name "
            "recorded comes from your credentials (leave it out)",
            given,
        )


def _conflict(e: InvalidTransition) -> str:
    when = rfc3339(e.at) if e.at is not None else None
    who = "the rule (its condition cleared)" if e.by == RULE else (e.by or "someone")
    done = f"already {e.status} by {who}" + (f" at {when}" if when else "")
    return f"alert {e.alert_id} is {done}; it cannot be {_PAST[e.action]}"


_PAST = {"acknowledge": "acknowledged", "resolve": "resolved"}

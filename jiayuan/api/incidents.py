"""``/api/incidents``: alerts that belong together (one fire, one building's trouble), as the
people on duty handle them — list, read, and acknowledge at once. Scoped like alerts: an
incident is shown when the caller may see one of its alerts, with those alerts only."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from alerts import AlertNotFound, InvalidTransition, Status
from alerts.incidents import Incident
from alerts.messages import title
from jiayuan.api.alerts import AlertOut, alert_out
from jiayuan.api.bounds import I64_MAX
from jiayuan.api.deps import ANYONE, ID_PATTERN, Community, IpDep, Limit, Offset, ViewDep, allow
from jiayuan.api.times import utc
from rules.transitions import Severity

router = APIRouter(prefix="/api/incidents", tags=["incidents"], dependencies=[allow(*ANYONE)])

IncidentId = Annotated[int, Path(ge=1, le=I64_MAX, description="The incident's id.")]


class IncidentOut(BaseModel):
    id: int
    status: Status = Field(
        description="`resolved` when all its alerts are, `acknowledged` when all its open ones "
        "are, else `firing`."
    )
    severity: Severity = Field(description="The worst of its alerts.")
    title_key: str = Field(description="The rule id (kind) of its headline alert.")
    title_zh: str
    title_en: str
    headline_id: int = Field(description="Its most urgent alert.")
    building: str | None
    started_at: datetime = Field(description="Event time its first alert started.")
    updated_at: datetime
    resolved_at: datetime | None
    alert_ids: list[int] = Field(description="Its alerts the caller may see.")
    alerts: list[AlertOut]


class IncidentPage(BaseModel):
    items: list[IncidentOut]
    total: int


class IncidentAckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000)


def incident_out(view: ViewDep, inc: Incident) -> IncidentOut:
    alerts = [
        alert_out(view.scope.redact(a), view.ctx.registry)
        for a in view.ctx.alerts.some(inc.alert_ids)
    ]
    return IncidentOut(
        id=inc.id,
        status=inc.status,
        severity=inc.severity,
        title_key=inc.title_key,
        title_zh=title(inc.title_key, "zh"),
        title_en=title(inc.title_key, "en"),
        headline_id=inc.headline_id,
        building=inc.building,
        started_at=utc(inc.started_at),
        updated_at=utc(inc.updated_at),
        resolved_at=utc(inc.resolved_at),
        alert_ids=list(inc.alert_ids),
        alerts=alerts,
    )


@router.get("", response_model=IncidentPage, summary="List incidents")
def list_incidents(
    view: ViewDep,
    status: Annotated[list[Status] | None, Query(description="One or more statuses.")] = None,
    building: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    community: Community = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> IncidentPage:
    """Incidents with an alert the caller may see: open ones first, the most urgent first."""
    audience = view.scope.audience
    if community is not None:  # communities: only incidents with an alert of that one
        audience = replace(audience, communities=view.communities(community))
    items, total = view.ctx.alerts.incidents(
        status=status,
        building=building,
        audience=audience,
        limit=limit,
        offset=offset,
    )
    return IncidentPage(items=[incident_out(view, i) for i in items], total=total)


@router.get("/{incident_id}", response_model=IncidentOut, summary="Read an incident")
def get_incident(view: ViewDep, incident_id: IncidentId) -> IncidentOut:
    return incident_out(view, _incident(view, incident_id))


@router.post(
    "/{incident_id}/ack",
    response_model=IncidentOut,
    summary="Acknowledge an incident",
    responses={404: {"description": "No such incident (or not one the caller may see)"}},
)
def ack_incident(
    view: ViewDep, ip: IpDep, incident_id: IncidentId, body: IncidentAckIn
) -> IncidentOut:
    """Acknowledge, in the caller's name, every firing alert of the incident the caller may
    see. Alerts someone else acknowledged meanwhile stay theirs."""
    inc = _incident(view, incident_id)
    who = view.principal
    for a in view.ctx.alerts.some(inc.alert_ids):
        if a.status != "firing":
            continue
        try:
            change = view.ctx.alerts.acknowledge(a.id, who.id, body.note)
        except (AlertNotFound, InvalidTransition):
            continue
        if change is not None:
            view.audit.record(
                who.id,
                "alert.acknowledge",
                target=str(a.id),
                ip=ip,
                rule_id=a.rule_id,
                device_id=a.device_id,
                via=who.via,
                incident_id=incident_id,
            )
    view.ctx.alerts.refresh_incident(incident_id)
    return incident_out(view, _incident(view, incident_id))


def _incident(view: ViewDep, incident_id: int) -> Incident:
    inc = view.ctx.alerts.incident(incident_id, view.scope.audience)
    if inc is None:
        raise HTTPException(404, f"incident {incident_id} not found")
    return inc

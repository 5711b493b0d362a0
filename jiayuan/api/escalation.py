"""Escalation chains and timers, and delivery receipts:

- ``GET /api/escalation/chains``: the chains in force, in the order they are matched
- ``GET /api/escalation/timers``: alerts still to be paged — next step and when it is due
- ``GET /api/alerts/{id}/deliveries``: every message sent (or tried) for an alert, to whom, why,
  through which channel (secrets masked), with each attempt
- ``GET /api/deliveries``: recent deliveries of all alerts (``status``, ``staff_id``)

Chains, timers and the deliveries of all alerts are for admins, managers and operators; the
deliveries of one alert for whoever may see that alert.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from alerts.escalation import Timer
from alerts.outbox import Delivery, Status
from jiayuan.api.bounds import I64_MAX
from jiayuan.api.deps import ANYONE, ID_PATTERN, Limit, Offset, ViewDep, allow
from jiayuan.api.silences import ALERTING_DOWN, AlertingDep, get_alerting
from jiayuan.api.times import utc

router = APIRouter(tags=["escalation"], responses=ALERTING_DOWN)
DESK = allow("admin", "manager", "district_manager", "operator")


class ChainPage(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="`id`, `description`, `match`, `steps` (`after` seconds, `to` selectors), "
        "`repeat` seconds, `repeat_limit`."
    )
    total: int


class TimerOut(BaseModel):
    alert_id: int
    chain_id: str
    state: str = Field(
        description="`chain`, `grouping` (a trouble waiting to be grouped) or "
        "`muted` (held by a silence until `due_at`)."
    )
    next_step: int = Field(description="0-based; past the chain's last step: a repeat.")
    started_at: datetime
    due_at: datetime
    muted_by: int | None


class TimerPage(BaseModel):
    items: list[TimerOut]
    total: int


class AttemptOut(BaseModel):
    at: datetime
    outcome: str = Field(description="`sent`, `retrying` or `failed`.")
    error: str
    elapsed_ms: float


class DeliveryOut(BaseModel):
    id: int
    alert_id: int
    staff_id: str
    channel: str = Field(description="The apprise URL with its secrets masked, no query.")
    step: int = Field(description="Chain step (0 = first notice; -1 = a follow-up).")
    purpose: str = Field(description="`notify`, `escalate`, `repeat` or `update`.")
    reason: str = Field(description="Why this person.")
    status: Status
    attempts: int
    error: str
    title: str
    body: str
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime | None
    history: list[AttemptOut] = []


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    total: int


def timer_out(t: Timer) -> TimerOut:
    return TimerOut(
        alert_id=t.alert_id,
        chain_id=t.chain_id,
        state=t.state,
        next_step=t.step,
        started_at=utc(t.started_at),
        due_at=utc(t.due_at),
        muted_by=t.muted_by,
    )


def delivery_out(d: Delivery, attempts: list[AttemptOut]) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        alert_id=d.alert_id,
        staff_id=d.staff_id,
        channel=d.label,
        step=d.step,
        purpose=d.purpose,
        reason=d.reason,
        status=d.status,
        attempts=d.attempts,
        error=d.error,
        title=d.title,
        body=d.body,
        created_at=utc(d.created_at),
        updated_at=utc(d.updated_at),
        sent_at=utc(d.sent_at),
        next_attempt_at=utc(d.next_at) if d.status in ("pending", "retrying") else None,
        history=attempts,
    )


@router.get(
    "/api/escalation/chains",
    response_model=ChainPage,
    summary="Escalation chains",
    dependencies=[DESK],
)
def list_chains(alerting: AlertingDep) -> ChainPage:
    """The first chain whose `match` fits an alert is the one it follows."""
    items = [c.model_dump(mode="json") for c in alerting.chains.chains]
    return ChainPage(items=items, total=len(items))


@router.get(
    "/api/escalation/timers",
    response_model=TimerPage,
    summary="Pending escalations",
    dependencies=[DESK],
)
def list_timers(alerting: AlertingDep, limit: Limit = 50, offset: Offset = 0) -> TimerPage:
    """Alerts still to be paged, the soonest due first."""
    items, total = alerting.timers.page(limit, offset)
    return TimerPage(items=[timer_out(t) for t in items], total=total)


def _with_attempts(alerting: AlertingDep, items: list[Delivery]) -> list[DeliveryOut]:
    attempts = alerting.outbox.attempts(d.id for d in items)
    return [
        delivery_out(
            d,
            [
                AttemptOut(
                    at=utc(r["at"]),
                    outcome=r["outcome"],
                    error=r["error"],
                    elapsed_ms=round(r["elapsed_ms"], 1),
                )
                for r in attempts.get(d.id, [])
            ],
        )
        for d in items
    ]


@router.get(
    "/api/alerts/{alert_id}/deliveries",
    response_model=DeliveryPage,
    summary="Delivery receipts of an alert",
    responses={404: {"description": "No such alert (or not one the caller may see)"}},
    dependencies=[allow(*ANYONE)],
)
def list_alert_deliveries(
    view: ViewDep,
    alert_id: Annotated[int, Path(ge=1, le=I64_MAX)],
) -> DeliveryPage:
    """Oldest first, each with its attempts."""
    view.alert(alert_id)  # 404 first: whether alerting runs says nothing about the alert
    alerting = get_alerting(view.ctx)
    items = alerting.outbox.of_alert(alert_id)
    return DeliveryPage(items=_with_attempts(alerting, items), total=len(items))


@router.get(
    "/api/deliveries",
    response_model=DeliveryPage,
    summary="Recent deliveries",
    dependencies=[DESK],
)
def list_deliveries(
    alerting: AlertingDep,
    status: Annotated[Status | None, Query()] = None,
    staff_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> DeliveryPage:
    """Newest first."""
    items, total = alerting.outbox.page(
        status=status, staff_id=staff_id, limit=limit, offset=offset
    )
    return DeliveryPage(items=_with_attempts(alerting, items), total=total)

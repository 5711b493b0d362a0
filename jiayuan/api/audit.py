"""``GET /api/audit``: the audit trail for admins, newest first, with filters and paging."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from jiayuan.api.deps import AuthDep, Limit, Offset, Since, Until, allow, check_range
from jiayuan.api.times import epoch, utc

router = APIRouter(prefix="/api/audit", tags=["audit"], dependencies=[allow("admin")])


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(
        description="A staff id, `admin-token`, `cli:<user>`, `system` or "
        "`anonymous` (a refused sign-in)."
    )
    action: str = Field(description="e.g. `auth.login`, `alert.acknowledge`, `token.create`.")
    target: str = Field(description="What it acted on: a staff id, an alert or silence id.")
    outcome: Literal["ok", "refused"]
    ip: str = Field(description="The client's address (`local` for the command line).")
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditOut]
    total: int


@router.get("", response_model=AuditPage, summary="List the audit trail")
def list_audit(
    auth: AuthDep,
    actor: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[
        str | None,
        Query(
            pattern=r"^[a-z_]+\.([a-z_]+)?$",
            description="One action, or a family ending in `.` (`auth.`).",
        ),
    ] = None,
    outcome: Literal["ok", "refused"] | None = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> AuditPage:
    check_range(since, until)
    items, total = auth.audit.page(
        actor=actor,
        action=action,
        outcome=outcome,
        since=epoch(since),
        until=epoch(until),
        limit=limit,
        offset=offset,
    )
    return AuditPage(
        items=[
            AuditOut(
                id=e.id,
                at=utc(e.at),
                actor=e.actor,
                action=e.action,
                target=e.target,
                outcome=e.outcome,
                ip=e.ip,
                detail=e.detail,
            )
            for e in items
        ],
        total=total,
    )

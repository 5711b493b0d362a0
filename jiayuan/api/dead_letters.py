"""``/api/dead-letters``: what was refused and why, and how many per reason. For admins and
operators: a dead letter keeps the raw payload, which may be a wearable's."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ingest.payloads import REASONS, DeadLetterReason
from jiayuan.api.deps import (
    Community,
    CtxDep,
    Limit,
    Offset,
    Since,
    Until,
    ViewDep,
    allow,
    check_range,
)
from jiayuan.api.times import epoch, utc

router = APIRouter(
    prefix="/api/dead-letters", tags=["dead letters"], dependencies=[allow("admin", "operator")]
)


class DeadLetterOut(BaseModel):
    id: int
    received: datetime
    topic: str
    reason: DeadLetterReason
    detail: str
    payload: str = Field(description="The raw bytes (at most 4 KiB), invalid UTF-8 escaped.")


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    total: int


class DeadLetterCounts(BaseModel):
    counts: dict[str, int] = Field(description="Every reason, with 0 for those never seen.")
    total: int


@router.get("", response_model=DeadLetterPage, summary="List dead letters")
def list_dead_letters(
    view: ViewDep,
    reason: DeadLetterReason | None = None,
    community: Community = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> DeadLetterPage:
    """Newest first. `since`/`until` bound the receive time. With several communities, one
    who sees only some sees the dead letters on their topics (``community/<id>/…``)."""
    check_range(since, until)
    items, total = view.ctx.journal.dead_letters(
        reason=reason,
        since=epoch(since),
        until=epoch(until),
        communities=view.communities(community),
        limit=limit,
        offset=offset,
    )
    return DeadLetterPage(
        items=[DeadLetterOut(**{**d, "received": utc(d["received"])}) for d in items],
        total=total,
    )


@router.get("/counts", response_model=DeadLetterCounts, summary="Count dead letters by reason")
def count_dead_letters(ctx: CtxDep) -> DeadLetterCounts:
    counts = dict.fromkeys(REASONS, 0) | ctx.journal.dead_letter_counts()
    return DeadLetterCounts(counts=counts, total=sum(counts.values()))

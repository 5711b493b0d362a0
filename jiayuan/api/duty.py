"""``GET /api/duty/coverage``: for every escalation chain and place (building, or a compound's
entrance), who would be paged first across the week, and the half hours where nobody would be
(:mod:`alerts.coverage`). For admins, managers and operators; several communities: each line
within its own community, of the communities the caller sees (``community``: one)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from alerts.coverage import Line, Span
from jiayuan.api.deps import ID_PATTERN, Community, ViewDep
from jiayuan.api.escalation import DESK
from jiayuan.api.silences import AlertingDep
from rules.transitions import Route

router = APIRouter(prefix="/api/duty", tags=["duty"], dependencies=[DESK])


class SpanOut(BaseModel):
    start: str = Field(description="Local day and time, e.g. `Mon 08:00`.")
    end: str = Field(description="Exclusive, e.g. `Mon 17:00` (`Sun 24:00`: end of week).")
    first: list[str] = Field(description="Who would be paged first (at most 6); empty: nobody.")
    step: int = Field(description="The chain step (1-based) that pages them; 0: nobody.")
    fallback: bool = Field(description="Only the security desk and duty manager would be.")


class HoleOut(BaseModel):
    start: str
    end: str
    residents: int = Field(
        description="For alerts of residents: how many residents of the place nobody would "
        "hear about (0 for other alerts)."
    )


class CoverageLine(BaseModel):
    chain_id: str
    route: Route
    rule_id: str = Field(description="An alert kind the chain is used for (the example).")
    place: str = Field(description="A building, or `entrance:<compound>`.")
    community: str = Field(description="The community of the place.")
    spans: list[SpanOut]
    holes: list[HoleOut]


class CoverageOut(BaseModel):
    items: list[CoverageLine]
    total: int
    holes: int = Field(description="Holes over all lines (before filters).")


def _span(s: Span) -> SpanOut:
    start, _, end = s.label.partition("–")
    return SpanOut(start=start, end=end, first=list(s.first), step=s.step, fallback=s.fallback)


def _line(line: Line, community: str) -> CoverageLine:
    return CoverageLine(
        community=community,
        chain_id=line.chain_id,
        route=line.route,
        rule_id=line.rule_id,
        place=line.place,
        spans=[_span(s) for s in line.spans],
        holes=[
            HoleOut(start=h.label.partition("–")[0], end=h.label.partition("–")[2],
                    residents=h.residents)
            for h in line.holes
        ],
    )  # fmt: skip


@router.get("/coverage", response_model=CoverageOut, summary="Duty coverage across the week")
def get_coverage(
    alerting: AlertingDep,
    view: ViewDep,
    building: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    route: Route | None = None,
    community: Community = None,
    holes_only: Annotated[bool, Query(description="Only lines with a hole.")] = False,
) -> CoverageOut:
    """Who would be paged first for a new alert of each chain at each place, per half hour of
    the week (local time), and where nobody would be."""
    shown = view.communities(community)
    lines = [
        (line, c)
        for c in view.ctx.registry.parts
        if shown is None or c in shown
        for line in alerting.coverage(community=c)
    ]
    n_holes = sum(len(line.holes) for line, _ in lines)
    kept = [
        (line, c)
        for line, c in lines
        if (building is None or line.place == building)
        and (route is None or line.route == route)
        and (not holes_only or line.holes)
    ]
    return CoverageOut(items=[_line(line, c) for line, c in kept], total=len(kept), holes=n_holes)

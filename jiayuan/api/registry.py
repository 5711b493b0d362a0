"""``/api/registry/summary``: what the loaded registry holds, in counts (admins, managers,
operators)."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter
from pydantic import BaseModel, Field

from jiayuan.api.deps import CtxDep, allow

router = APIRouter(
    prefix="/api/registry",
    tags=["registry"],
    dependencies=[allow("admin", "manager", "district_manager", "operator")],
)


class RegistrySummary(BaseModel):
    community: str
    compounds: int
    buildings: int
    devices: dict[str, int] = Field(description="Registered devices by kind.")
    residents: int
    staff: dict[str, int] = Field(description="Staff by role.")


@router.get("/summary", response_model=RegistrySummary, summary="Summarize the registry")
def get_registry_summary(ctx: CtxDep) -> RegistrySummary:
    reg = ctx.registry
    return RegistrySummary(
        community=reg.community,
        compounds=len(
            {b.compound for b in reg.buildings.values()}
            | {d.compound for d in reg.devices.values()}
        ),
        buildings=len(reg.buildings),
        devices=dict(Counter(d.kind for d in reg.devices.values())),
        residents=len(reg.residents),
        staff=dict(Counter(s.role for s in reg.staff.values())),
    )

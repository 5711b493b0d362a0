"""``/api/fleet/summary``: the health of the devices by building — online, offline, silent,
low battery, never heard — and how many devices were heard that the registry does not know.

A compound's entrance gates have no building: they are counted under the compound with
``building`` null.

Counted over the devices the caller may see (a caretaker: their residents' wearables and their
homes' smoke detectors; security: gates and smoke detectors).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any, Final

from fastapi import APIRouter
from pydantic import BaseModel, Field

from jiayuan.api.deps import ANYONE, ViewDep, allow
from jiayuan.api.times import utc

router = APIRouter(prefix="/api/fleet", tags=["devices"], dependencies=[allow(*ANYONE)])

LOW_BATTERY: Final = 20.0
SILENT_AFTER_S: Final = {"wearable": 30 * 60.0, "smoke": 2 * 3600.0, "gate": 2 * 3600.0}
"""Like the built-in pack's absence rules: a device not heard for this long is silent."""
ALL: Final = 1_000_000


class Place(BaseModel):
    compound: str | None
    building: str | None = Field(description="Null for a compound's entrance gates.")
    name: str
    devices: int
    kinds: dict[str, int]
    online: int
    offline: int
    no_status: int = Field(description="Heard, but never sent a status message.")
    never_seen: int
    silent: int = Field(description="Not heard from for longer than its kind's silence limit.")
    low_battery: int = Field(description=f"Battery below {LOW_BATTERY:g} %.")
    last_seen: datetime | None = Field(description="When any device of the place was heard.")


class FleetSummary(BaseModel):
    at: datetime
    places: list[Place] = Field(description="Registered devices by compound and building.")
    registered: int
    unregistered: int = Field(description="Devices heard on the broker but not registered.")
    low_battery_below: float = LOW_BATTERY
    silent_after_s: dict[str, float] = Field(default_factory=lambda: dict(SILENT_AFTER_S))


@router.get("/summary", response_model=FleetSummary, summary="Device health by building")
def get_fleet_summary(view: ViewDep) -> FleetSummary:
    now = time.time()
    devices, _ = view.devices(limit=ALL)
    groups: dict[tuple[str | None, str | None], list[dict[str, Any]]] = {}
    unregistered = 0
    for d in devices:
        if not d["registered"]:
            unregistered += 1
            continue
        groups.setdefault((d["compound"], d["building"]), []).append(d)
    buildings = view.ctx.registry.buildings
    places = [
        _place(
            compound,
            building,
            group,
            now,
            buildings[building].name if building in buildings else "",
        )
        for (compound, building), group in groups.items()
    ]
    places.sort(key=lambda p: (p.compound or "", p.building is not None, _natural(p.building)))
    return FleetSummary(
        at=utc(now),
        places=places,
        registered=len(devices) - unregistered,
        unregistered=unregistered,
    )


def _place(
    compound: str | None,
    building: str | None,
    group: list[dict[str, Any]],
    now: float,
    name: str,
) -> Place:
    seen = [d["last_seen"] for d in group if d["last_seen"] is not None]
    return Place(
        compound=compound,
        building=building,
        name=name,
        devices=len(group),
        kinds=dict(Counter(d["kind"] for d in group)),
        online=sum(d["online"] is True for d in group),
        offline=sum(d["online"] is False for d in group),
        no_status=sum(d["online"] is None and d["last_seen"] is not None for d in group),
        never_seen=len(group) - len(seen),
        silent=sum(
            d["last_seen"] is not None
            and now - d["last_seen"] > SILENT_AFTER_S.get(d["kind"], 3600.0)
            for d in group
        ),
        low_battery=sum(d["battery"] is not None and d["battery"] < LOW_BATTERY for d in group),
        last_seen=utc(max(seen)) if seen else None,
    )


def _natural(text: str | None) -> tuple[int, str]:
    """B2 before B10."""
    digits = "".join(c for c in text or "" if c.isdigit())
    return (int(digits) if digits else 0, text or "")

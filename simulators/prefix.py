"""A second community for the same simulator: every id of a fleet (devices, residents, staff,
buildings, compounds) with a prefix, so that two fleets built alike can share one installation,
where ids must be unique across communities (docs/communities.md)."""

from __future__ import annotations

from registry.models import Building, Device, Registry, Resident, Staff
from simulators.behaviour import GateSim
from simulators.fleet import Fleet


def prefixed(fleet: Fleet, prefix: str) -> Fleet:
    """``fleet`` with ``prefix`` before each id (its simulators renamed in place); an empty
    prefix is the fleet itself."""
    if not prefix:
        return fleet
    reg = fleet.registry

    def p(x: str | None) -> str | None:
        return None if x is None else prefix + x

    def building(b: Building) -> Building:
        return b.model_copy(
            update={"building": prefix + b.building, "compound": prefix + b.compound}
        )

    def device(d: Device) -> Device:
        return d.model_copy(
            update={
                "device_id": prefix + d.device_id,
                "compound": prefix + d.compound,
                "building": p(d.building),
                "resident_id": p(d.resident_id),
            }
        )

    def resident(r: Resident) -> Resident:
        return r.model_copy(
            update={
                "resident_id": prefix + r.resident_id,
                "building": prefix + r.building,
                "caretakers": tuple(prefix + s for s in r.caretakers),
            }
        )

    def staff(s: Staff) -> Staff:
        tail = f"/{s.staff_id}"  # a channel ends with the staff id (the demo receiver's)
        return s.model_copy(
            update={
                "staff_id": prefix + s.staff_id,
                "channels": tuple(
                    c[: -len(tail)] + f"/{prefix}{s.staff_id}" if c.endswith(tail) else c
                    for c in s.channels
                ),
                "buildings": tuple(prefix + b for b in s.buildings),
                "compounds": tuple(prefix + c for c in s.compounds),
                "shifts": tuple(x.model_copy(update={"building": p(x.building)}) for x in s.shifts),
            }
        )

    registry = Registry(
        reg.community,
        buildings=[building(b) for b in reg.buildings.values()],
        devices=[device(d) for d in reg.devices.values()],
        residents=[resident(r) for r in reg.residents.values()],
        staff=[staff(s) for s in reg.staff.values()],
    )
    sims = {}
    for sim in fleet.sims.values():
        sim.device_id = prefix + sim.device_id
        if isinstance(sim, GateSim):
            sim.credential_scope = tuple(prefix + b for b in sim.credential_scope)
        sims[sim.device_id] = sim
    return Fleet(fleet.community, fleet.seed, registry, sims)

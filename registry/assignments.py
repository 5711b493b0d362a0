"""Who wore a device when: a wearable moved to another resident (or retired and registered
again) starts a new history for its new wearer.

Readings, rollups and baselines are kept per device. Without a mark, re-registering a retired
wearable to ``r-3`` would show ``r-3``'s caretaker ``r-1``'s heart rates, and ``r-1``'s history
would become ``r-3``'s baseline. :attr:`Device.assigned_since` is that mark; whoever swaps a
new registry in stamps it with :func:`stamp_assignments`, and what is shown for a resident
starts from it (:func:`history_floor`)."""

from __future__ import annotations

from registry.models import Device, Registry


def stamp_assignments(old: Registry, new: Registry, now: float) -> Registry:
    """``new`` with ``assigned_since`` set to ``now`` on each device whose wearer is not the
    one it had in ``old`` (a device new to the registry with a wearer too: a retired one comes
    back with its history), kept from ``old`` when the wearer is the same, cleared without a
    wearer. ``new`` itself when nothing changes. Several communities: each stamped within its
    own, and combined again."""
    if len(new.parts) > 1:
        parts = {c: stamp_assignments(old, r, now) for c, r in new.parts.items()}
        if all(parts[c] is r for c, r in new.parts.items()):
            return new
        return Registry.combine(parts)
    devices: list[Device] = []
    stamped = False
    for d in new.devices.values():
        before = old.devices.get(d.device_id)
        if d.resident_id is None:
            since = None
        elif before is not None and before.resident_id == d.resident_id:
            since = d.assigned_since if d.assigned_since is not None else before.assigned_since
        else:  # a new wearer: whatever the record carried was the previous wearer's
            since = now
        if since != d.assigned_since:
            d = d.model_copy(update={"assigned_since": since})
            stamped = True
        devices.append(d)
    if not stamped:
        return new
    return Registry(
        new.community,
        buildings=list(new.buildings.values()),
        devices=devices,
        residents=list(new.residents.values()),
        staff=list(new.staff.values()),
    )


def history_floor(registry: Registry, device_id: str) -> float | None:
    """Where the history shown for a device's wearer starts (None: all of it)."""
    d = registry.devices.get(device_id)
    return None if d is None or d.resident_id is None else d.assigned_since


def floors(registry: Registry) -> dict[str, float]:
    """:func:`history_floor` of every device that has one."""
    return {
        d.device_id: d.assigned_since
        for d in registry.devices.values()
        if d.resident_id is not None and d.assigned_since is not None
    }

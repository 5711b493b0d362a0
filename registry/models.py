"""Registry records (pydantic, ``extra="forbid"``) and the in-memory :class:`Registry`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

Id = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
Role = Literal["admin", "security", "caretaker", "manager", "operator", "district_manager"]
"""``district_manager``: a manager of every community of the installation (docs/communities.md);
the others act within their own community (the one whose registry lists them)."""
DeviceKind = Literal["gate", "smoke", "wearable"]
_AREA: Final[dict[str, Any]] = {
    "type": "array",
    "items": {"type": "number"},
    "minItems": 3,
    "maxItems": 3,
    "description": "[lat, lon, radius_m]",
}
"""The allowed area's JSON schema: OpenAPI tools read a tuple's positional schema badly."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Building(_Record):
    building: str = Id
    compound: str = Id
    name: str = ""
    floors: int = Field(default=6, ge=1, le=200)


class Device(_Record):
    device_id: str = Id
    kind: DeviceKind
    compound: str = Id
    building: str | None = None
    """None for a compound's entrance gate."""
    unit: str | None = None
    """Household (unit) number, e.g. ``3-2-501``; smoke detectors and wearables."""
    floor: int | None = None
    room: str | None = None
    resident_id: str | None = None
    """The wearer, for a wearable."""
    name: str = ""
    """A short place name staff understand (e.g. ``Compound 3 north gate``)."""
    via: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """How it reports — its one way in: None (the default) is native MQTT under its own broker
    account; otherwise the id of the device profile (``z2m_smoke``) or of the push integration
    (``ctwing``) that speaks for it. A reading of it that comes any other way is a dead letter
    (:func:`wrong_way`)."""
    assigned_since: float | None = None
    """When the device was given to its wearer (Unix seconds): its readings and baselines
    shown for her start here, never a previous wearer's (set by
    :func:`registry.assignments.stamp_assignments`)."""


NATIVE: Final = "native MQTT (its own broker account)"


def way_name(via: str | None) -> str:
    return NATIVE if via is None else f"via {via}"


def wrong_way(device: Device | None, via: str | None) -> str | None:
    """Why a reading of ``device`` that came ``via`` a profile or an integration (None: native
    MQTT) is refused, or None when it may come that way: each registered device id belongs to
    one way in, its ``via``; an unregistered id may come any way (commissioning lists it)."""
    if device is None or device.via == via:
        return None
    return (
        f"device {device.device_id} is registered to report {way_name(device.via)},"
        f" not {way_name(via)}"
    )


class Resident(_Record):
    """A resident under care. ``resident_id`` is pseudonymous; no name is needed to act."""

    resident_id: str = Id
    display_name: str = Field(default="", max_length=40)
    """What the resident's caretakers call them (e.g. ``王奶奶``): shown only to the resident's
    caretakers and the managers, never in notifications, logs or to security. Optional."""
    building: str = Id
    unit: str
    floor: int | None = None
    room: str | None = None
    caretakers: tuple[str, ...] = ()
    """Staff ids, first is the primary caretaker."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Personal overrides of rule levels by name, e.g. ``heart_rate_high: 110``."""
    allowed_area: Annotated[tuple[float, float, float], WithJsonSchema(_AREA)] | None = None
    """(lat, lon, radius_m) for the zone rule."""


class Shift(_Record):
    """A weekly shift: ``days`` 0=Monday … 6=Sunday, ``start``–``end`` local time (may wrap)."""

    days: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    start: time = time(0, 0)
    end: time = time(23, 59, 59)
    building: str | None = None
    """Limits a caretaker's or guard's duty to one building; None is the whole community."""

    @field_validator("start", "end")
    @classmethod
    def _local(cls, v: time) -> time:
        if v.tzinfo is not None:
            raise ValueError("a local time of the roster (JIAYUAN_TIMEZONE), without a zone")
        return v


class Staff(_Record):
    staff_id: str = Id
    name: str
    role: Role
    channels: tuple[str, ...] = ()
    """apprise URLs."""
    shifts: tuple[Shift, ...] = ()
    buildings: tuple[str, ...] = ()
    compounds: tuple[str, ...] = ()
    """Compounds the person covers (a guard's entrance gate has no building); empty = all."""


class Registry:
    """Lookups over the loaded records. Immutable once built; reload builds a new one."""

    def __init__(
        self,
        community: str = "y",
        buildings: list[Building] | None = None,
        devices: list[Device] | None = None,
        residents: list[Resident] | None = None,
        staff: list[Staff] | None = None,
    ) -> None:
        self.community = community
        self.buildings = {b.building: b for b in buildings or ()}
        self.devices = {d.device_id: d for d in devices or ()}
        self.residents = {r.resident_id: r for r in residents or ()}
        self.staff = {s.staff_id: s for s in staff or ()}
        self.parts: dict[str, Registry] = {community: self}
        """The installation's communities, each with its own registry: this one alone, unless
        :meth:`combine` built it."""
        self._community_of: dict[str, str] | None = None

    @classmethod
    def combine(cls, parts: Mapping[str, Registry]) -> Registry:
        """One registry over several communities' (their device, resident and staff ids apart:
        :func:`registry.communities.load_communities` checks). Its ``community`` is the first;
        ``parts`` keeps each community's own registry, which routing reads."""
        if len(parts) == 1:
            return next(iter(parts.values()))
        first = next(iter(parts))
        whole = cls(
            first,
            [b for r in reversed(list(parts.values())) for b in r.buildings.values()],
            [d for r in parts.values() for d in r.devices.values()],
            [x for r in parts.values() for x in r.residents.values()],
            [s for r in parts.values() for s in r.staff.values()],
        )
        whole.parts = dict(parts)
        whole._community_of = {d: community for community, r in parts.items() for d in r.devices}
        return whole

    def community_of(self, device_id: str) -> str | None:
        """The community a registered device belongs to; None when it is not registered."""
        if self._community_of is None:
            return self.community if device_id in self.devices else None
        return self._community_of.get(device_id)

    def resident_community(self, resident_id: str) -> str | None:
        """The community whose registry lists ``resident_id``; None when none does."""
        for community, r in self.parts.items():
            if resident_id in r.residents:
                return community
        return None

    def staff_community(self, staff_id: str) -> str | None:
        """The community whose registry lists ``staff_id``; None when none does."""
        for community, r in self.parts.items():
            if staff_id in r.staff:
                return community
        return None

    def device(self, device_id: str) -> Device | None:
        return self.devices.get(device_id)

    def resident_of(self, device_id: str) -> Resident | None:
        d = self.devices.get(device_id)
        if d is None or d.resident_id is None:
            return None
        return self.residents.get(d.resident_id)

    def threshold(self, device_id: str, name: str, default: float) -> float:
        """A resident's personal level for ``name`` if the device's wearer has one."""
        r = self.resident_of(device_id)
        if r is None:
            return default
        return r.thresholds.get(name, default)

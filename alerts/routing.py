"""Who gets an alert: the people a chain step names, resolved against the registry's duty roster.

A step names people by *selector*, each resolved for the alert's place (compound, building) and
the moment it runs:

- ``own_caretaker:N``: the resident's N-th caretaker on duty, primary first (the registry lists a
  resident's caretakers in order); ``own_caretakers``: all of them on duty
- ``building_caretaker``: caretakers on duty for the alert's building
- ``elderly_caretakers``: for every elderly resident living in the alert's building, their first
  caretaker on duty (a smoke alarm reaches those who help them out)
- ``security``: security staff on duty for the place (its guards and the community-wide desk);
  ``security_local``: its guards only; ``security_desk``: community-wide security on duty;
  ``security_roster``: every security staff member on duty
- ``manager``, ``operator``, ``admin``: everyone of that role on duty
- ``staff:ID``: that person, on duty or not

Duty: a person with weekly shifts is on duty during one of them (local time, ``settings.timezone``;
a shift that ends before it starts runs past midnight into the next day; a shift naming a
building covers that building only); a person without shifts is always on call. A person's
``buildings`` and ``compounds`` limit what they cover (empty: the whole community).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Final
from zoneinfo import ZoneInfo

from alerts.model import Alert
from registry.models import Registry, Resident, Shift, Staff

SELECTOR: Final = re.compile(
    r"own_caretaker:[1-9]|own_caretakers|building_caretaker|elderly_caretakers|security"
    r"|security_local|security_desk|security_roster|manager|operator|admin"
    r"|staff:[A-Za-z0-9_-]{1,64}"
)
_END_OF_DAY: Final = time(23, 59, 59)


@dataclass(frozen=True, slots=True)
class Target:
    """One person to notify, and why (kept in the alert's history and the delivery receipt)."""

    staff_id: str
    reason: str
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Place:
    compound: str | None
    building: str | None
    resident_id: str | None

    @classmethod
    def of(cls, alert: Alert) -> Place:
        lb = alert.labels
        return cls(lb.get("compound"), lb.get("building"), lb.get("resident_id"))


def shift_active(shift: Shift, at: datetime) -> bool:
    """Whether the weekly ``shift`` covers local time ``at``."""
    t, day = at.time(), at.weekday()
    start, end = shift.start, shift.end
    if start == end:
        return day in shift.days
    if start < end:
        return day in shift.days and start <= t and (t < end or end == _END_OF_DAY)
    return (day in shift.days and t >= start) or ((day - 1) % 7 in shift.days and t < end)


def on_duty(staff: Staff, at: datetime, building: str | None = None) -> bool:
    """On duty at local time ``at`` (for ``building`` when given); no shifts: always on call."""
    if not staff.shifts:
        return True
    return any(
        shift_active(s, at) and (s.building is None or building is None or s.building == building)
        for s in staff.shifts
    )


def covers(staff: Staff, compound: str | None, building: str | None) -> bool:
    """Whether ``staff`` looks after the place (empty ``buildings``/``compounds``: all)."""
    if staff.compounds and compound not in staff.compounds:
        return False
    if staff.buildings and building is not None:
        return building in staff.buildings
    if staff.buildings and building is None:  # a compound's entrance: by compound only
        return bool(staff.compounds) and compound in staff.compounds
    return True


def community_wide(staff: Staff) -> bool:
    return not staff.buildings and not staff.compounds


class Router:
    """Resolves selectors to :class:`Target` lists. Swap ``registry`` after a reload."""

    def __init__(self, registry: Registry, tz: ZoneInfo) -> None:
        self.tz = tz
        self._registry = registry
        self._by_building: dict[str, list[Resident]] = {}
        self._communities: dict[str, Router] = {}
        self.registry = registry

    @property
    def registry(self) -> Registry:
        return self._registry

    @registry.setter
    def registry(self, registry: Registry) -> None:
        self._registry = registry
        by_building: dict[str, list[Resident]] = defaultdict(list)
        for r in registry.residents.values():
            by_building[r.building].append(r)
        self._by_building = dict(by_building)
        # several communities: each alert is routed within its own community's registry
        parts = registry.parts
        self._communities = (
            {c: Router(r, self.tz) for c, r in parts.items()} if len(parts) > 1 else {}
        )

    def resolve(self, selectors: Iterable[str], alert: Alert, now: float) -> list[Target]:
        """The people the selectors name for ``alert`` at ``now``, each once (the first reason
        wins), in the order named. In an installation of several communities, only people of
        the alert's own community (its ``community`` label) are named."""
        if self._communities:
            own = self._communities.get(alert.labels.get("community", ""))
            return [] if own is None else own.resolve(selectors, alert, now)
        at = datetime.fromtimestamp(now, self.tz)
        place = Place.of(alert)
        seen: dict[str, Target] = {}
        for sel in selectors:
            for staff, why in self._select(sel, place, at):
                if staff.staff_id not in seen:
                    seen[staff.staff_id] = Target(staff.staff_id, why, staff.channels)
        return list(seen.values())

    # ------------------------------------------------------------------ selectors

    def _select(self, sel: str, p: Place, at: datetime) -> list[tuple[Staff, str]]:
        staff = self._registry.staff
        if sel.startswith("staff:"):
            s = staff.get(sel[6:])
            return [(s, "named in the escalation chain")] if s else []
        if sel.startswith("own_caretaker"):
            mine = self._own(p.resident_id, at)
            if sel == "own_caretakers":
                return mine
            n = int(sel.split(":")[1])
            return mine[n - 1 : n]
        if sel == "building_caretaker":
            return [
                (s, f"caretaker on duty for building {p.building}")
                for s in self._role("caretaker")
                if p.building and covers(s, p.compound, p.building) and on_duty(s, at, p.building)
            ]
        if sel == "elderly_caretakers":
            return self._elderly(p, at)
        if sel.startswith("security"):
            return self._security(sel, p, at)
        return [(s, f"{sel} on duty") for s in self._role(sel) if on_duty(s, at, p.building)]

    def _role(self, role: str) -> Sequence[Staff]:
        return [s for s in self._registry.staff.values() if s.role == role]

    def _own(self, resident_id: str | None, at: datetime) -> list[tuple[Staff, str]]:
        r = self._registry.residents.get(resident_id) if resident_id else None
        if r is None:
            return []
        out: list[tuple[Staff, str]] = []
        for i, sid in enumerate(r.caretakers):
            s = self._registry.staff.get(sid)
            if s is not None and on_duty(s, at):
                role = "primary caretaker" if i == 0 else f"caretaker {i + 1}"
                out.append((s, f"the resident's {role}, on duty"))
        return out

    def _elderly(self, p: Place, at: datetime) -> list[tuple[Staff, str]]:
        out: list[tuple[Staff, str]] = []
        for r in self._by_building.get(p.building or "", ()):
            mine = self._own(r.resident_id, at)
            if mine:
                out.append(
                    (mine[0][0], f"caretaker of an elderly resident in building {p.building}")
                )
        return out

    def _security(self, sel: str, p: Place, at: datetime) -> list[tuple[Staff, str]]:
        out: list[tuple[Staff, str]] = []
        for s in self._role("security"):
            if not on_duty(s, at, p.building):
                continue
            wide = community_wide(s)
            if sel == "security_roster":
                out.append((s, "security on duty (whole roster)"))
            elif wide and sel in ("security", "security_desk"):
                out.append((s, "security desk on duty"))
            elif (
                not wide
                and sel in ("security", "security_local")
                and (p.compound or p.building)
                and covers(s, p.compound, p.building)
            ):
                where = p.building or p.compound
                out.append((s, f"security on duty for {where}"))
        if sel == "security":  # the place's own guards before the desk
            out.sort(key=lambda item: community_wide(item[0]))
        return out

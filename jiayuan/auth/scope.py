"""Who is asking (:class:`Principal`) and what they may see (:class:`Scope`): the one place
that turns a role and the registry's assignments into the devices, readings, alerts and
residents a person is shown. The API reads the stores only through a scope
(:mod:`jiayuan.api.view`).

An installation of several communities (docs/communities.md): everyone but a district manager
(and the admin token) sees only their own community — the one whose registry lists them —
whatever their role says above.

- admin, manager: every device's state; gate and smoke readings; every alert; every resident
- district_manager: as a manager, in every community of the installation
- operator: every device's state; gate and smoke readings; every alert; no residents
- security: gates and smoke detectors (state and readings); alerts of those, of the
  ``security`` route, a resident's fall or silent wearable in a home with a smoke alarm
  (someone to look for in the fire: its place and kind, never its value), and those sent to
  them; no residents
- caretaker: their residents, their residents' wearables (state and health readings) and their
  homes' smoke detectors; the alerts of those devices and those sent to them

Health data (a wearable's readings, the value an alert of a wearable measured, a resident's
vitals and day's activity) is shown only to the resident's caretakers. Everyone else who sees
a wearable sees its state (online, battery, last seen), not its wearer's body.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Final, Literal

from alerts.model import Alert, Audience
from registry.models import Registry, Role

ADMIN_TOKEN_ID: Final = "admin-token"
"""The principal of ``JIAYUAN_ADMIN_TOKEN`` (automation), with the admin role."""
Via = Literal["session", "token", "admin-token"]
HEALTH_KIND: Final = "wearable"


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    """The staff id (or ``admin-token``): the name on whatever this person does."""
    role: Role
    name: str
    via: Via
    csrf: str | None = None
    """The session's CSRF token (sessions only): unsafe requests must send it back."""
    expires_at: float | None = None
    token_id: int | None = None


@dataclass(frozen=True, slots=True)
class _Policy:
    all_devices: bool
    kinds: frozenset[str]
    all_residents: bool
    audience: Audience


_NONE: Final = frozenset[str]()
_SITE: Final = frozenset({"gate", "smoke"})
POLICIES: Final[dict[Role, _Policy]] = {
    "admin": _Policy(True, _NONE, True, Audience(everyone=True)),
    "manager": _Policy(True, _NONE, True, Audience(everyone=True)),
    "district_manager": _Policy(True, _NONE, True, Audience(everyone=True)),
    "operator": _Policy(True, _NONE, False, Audience(everyone=True)),
    "security": _Policy(
        False,
        _SITE,
        False,
        Audience(kinds=_SITE, routes=frozenset({"security"}), fire_residents=True),
    ),
    "caretaker": _Policy(False, _NONE, False, Audience()),
}


@dataclass(frozen=True, slots=True)
class Scope:
    principal: Principal
    all_devices: bool
    kinds: frozenset[str]
    """Device kinds seen whole (security: gates and smoke detectors)."""
    devices: frozenset[str]
    """Devices seen one by one (a caretaker's)."""
    all_residents: bool
    residents: frozenset[str]
    vitals: frozenset[str]
    """Wearables whose health readings may be shown (the caretaker's residents')."""
    audience: Audience
    communities: frozenset[str] | None = None
    """The communities this person sees (None: every one; an installation of one community:
    always None)."""

    def sees_community(self, community: str | None) -> bool:
        return self.communities is None or community in self.communities

    def narrow(self, community: str | None) -> frozenset[str] | None:
        """The communities a listing shows: ``community`` alone when asked for (see
        :meth:`sees_community` first), else all this person sees (None: every one)."""
        return self.communities if community is None else frozenset({community})

    def sees_device(self, device_id: str, kind: str) -> bool:
        return self.all_devices or kind in self.kinds or device_id in self.devices

    def sees_readings(self, device_id: str, kind: str) -> bool:
        """Readings of a device seen: a wearable's only with its wearer's health."""
        return self.sees_device(device_id, kind) and (
            kind != HEALTH_KIND or device_id in self.vitals
        )

    def sees_resident(self, resident_id: str) -> bool:
        return self.all_residents or resident_id in self.residents

    def sees_vitals(self, device_id: str | None) -> bool:
        return device_id is not None and device_id in self.vitals

    def device_filter(self) -> tuple[frozenset[str], frozenset[str]] | None:
        """``(device ids, kinds)`` for the journal's listings; None: every device."""
        return None if self.all_devices else (self.devices, self.kinds)

    def redact(self, alert: Alert) -> Alert:
        """The alert as this person may see it: a wearable's measured value only for the
        wearer's caretakers."""
        if alert.value is None or alert.kind != HEALTH_KIND or alert.device_id in self.vitals:
            return alert
        return dataclasses.replace(alert, value=None)

    @property
    def can(self) -> list[str]:
        """What the console may offer (the API checks each request regardless)."""
        role = self.principal.role
        out = ["alerts", "devices"]
        if self.all_residents or self.residents or role == "caretaker":
            out.append("residents")
        if self.vitals or role == "caretaker":
            out.append("vitals")
        if self.all_devices or HEALTH_KIND in self.kinds or role == "caretaker":
            out.append("wearables")  # a wearable's state (a guard shown a fall in a fire: not)
        if role in ("admin", "manager", "operator", "district_manager"):
            out += ["ops", "silences", "escalation"]
        if role in ("admin", "operator"):
            out.append("dead_letters")
        if role == "admin":
            out += ["audit", "tokens_for_others"]
        return out


class Scopes:
    """Scopes over one registry: the caretakers' assignments are indexed once."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, Role], Scope] = {}
        residents_of: dict[str, set[str]] = defaultdict(set)
        for r in registry.residents.values():
            for staff_id in r.caretakers:
                residents_of[staff_id].add(r.resident_id)
        wearables: dict[str, set[str]] = defaultdict(set)
        homes: dict[tuple[str, str], set[str]] = defaultdict(set)
        for d in registry.devices.values():
            if d.kind == "wearable" and d.resident_id:
                wearables[d.resident_id].add(d.device_id)
            elif d.kind == "smoke" and d.building and d.unit:
                homes[(d.building, d.unit)].add(d.device_id)
        self._residents_of = dict(residents_of)
        self._wearables = dict(wearables)
        self._homes = dict(homes)

    def of(self, principal: Principal) -> Scope:
        key = (principal.id, principal.role)
        with self._lock:
            scope = self._cache.get(key)
        if scope is None:
            scope = self._build(principal)
            with self._lock:
                self._cache[key] = scope
        return (
            scope
            if scope.principal == principal
            else dataclasses.replace(scope, principal=principal)
        )

    def _build(self, p: Principal) -> Scope:
        policy = POLICIES[p.role]
        residents: frozenset[str] = _NONE
        vitals: frozenset[str] = _NONE
        devices: frozenset[str] = _NONE
        if p.role == "caretaker":
            residents = frozenset(self._residents_of.get(p.id, ()))
            vitals = frozenset(d for rid in residents for d in self._wearables.get(rid, ()))
            smoke = {
                d
                for rid in residents
                if (r := self.registry.residents.get(rid)) is not None
                for d in self._homes.get((r.building, r.unit), ())
            }
            devices = vitals | smoke
        audience = policy.audience
        if not audience.everyone:
            audience = dataclasses.replace(
                audience, devices=audience.devices | devices, delivered_to=p.id
            )
        communities = self._communities(p)
        if communities is not None:
            audience = dataclasses.replace(audience, communities=communities)
        return Scope(
            principal=p,
            all_devices=policy.all_devices,
            kinds=policy.kinds,
            devices=devices,
            all_residents=policy.all_residents,
            residents=residents,
            vitals=vitals,
            audience=audience,
            communities=communities,
        )

    def _communities(self, p: Principal) -> frozenset[str] | None:
        """Several communities: the one whose registry lists ``p`` (a district manager, the
        admin token: all); one community: None."""
        if len(self.registry.parts) == 1 or p.role == "district_manager" or p.via == "admin-token":
            return None
        own = self.registry.staff_community(p.id)
        return frozenset() if own is None else frozenset({own})

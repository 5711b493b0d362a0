"""Correlation across device kinds, on each newly raised alert:

- Two smoke detectors in alarm in the same unit, or on the same floor of a building, confirm a
  fire (the two-device logic of GB 50116): a ``fire_confirmed`` alert (critical, route security)
  is raised for that floor (or unit), naming the detectors in its labels.
- A fall or a silent wearable (no movement heard) of a resident whose unit has a smoke alarm is
  raised to critical (label ``correlated=smoke_alarm``), whichever came first.
- A smoke alarm also reaches the caretakers of the elderly residents of its building: that is a
  selector of the fire chain (``elderly_caretakers``, :mod:`alerts.routing`).

Everything it raises goes through the alert store as transitions, like the rule engine's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Final

from alerts import system
from alerts.lifecycle import AlertStore
from alerts.model import IN_FIRE, Alert
from registry.models import Registry
from rules.transitions import Transition

FIRE_CONFIRMED: Final = system.FIRE_CONFIRMED.id
SMOKE_RULES: Final = frozenset({"smoke_alarm"})
RESIDENT_RULES: Final = frozenset({"wearable_fall", "wearable_silent"})
CORRELATED: Final = IN_FIRE


class Correlator:
    def __init__(self, registry: Registry, store: AlertStore) -> None:
        self.store = store
        self._wearables: dict[tuple[str, str], list[str]] = {}
        self.registry = registry

    @property
    def registry(self) -> Registry:
        return self._registry

    @registry.setter
    def registry(self, registry: Registry) -> None:
        self._registry = registry
        homes: dict[tuple[str, str], list[str]] = defaultdict(list)
        for d in registry.devices.values():
            if d.kind == "wearable" and d.building and d.unit:
                homes[(d.building, d.unit)].append(d.device_id)
        self._wearables = dict(homes)

    def on_raised(self, alert: Alert, now: float) -> list[Transition]:
        if alert.rule_id in SMOKE_RULES:
            return self._confirm_fire(alert, now) + self._residents_of(alert)
        if alert.rule_id in RESIDENT_RULES and self._smoke_in_home(alert):
            return [raise_to_critical(alert)]
        return []

    # ------------------------------------------------------------------ internals

    def _floor(self, alert: Alert) -> int | None:
        d = self._registry.device(alert.device_id)
        return d.floor if d is not None else None

    def _open_smoke(self, building: str) -> list[Alert]:
        found: list[Alert] = []
        for rule in sorted(SMOKE_RULES):
            items, _ = self.store.find(rule_id=rule, building=building, open_only=True, limit=500)
            found += items
        return found

    def _confirm_fire(self, alert: Alert, now: float) -> list[Transition]:
        building, unit = alert.building, alert.labels.get("unit")
        if not building:
            return []
        floor = self._floor(alert)
        same_unit: list[Alert] = []
        same_floor: list[Alert] = []
        for other in self._open_smoke(building):
            if other.device_id == alert.device_id:
                continue
            if unit and other.labels.get("unit") == unit:
                same_unit.append(other)
            elif floor is not None and self._floor(other) == floor:
                same_floor.append(other)
        if not same_unit and not same_floor:
            return []
        devices = sorted({alert.device_id, *(o.device_id for o in same_unit + same_floor)})
        labels: dict[str, str] = {
            k: alert.labels[k] for k in ("community", "compound", "building") if k in alert.labels
        }
        if same_unit and unit:
            zone, where = f"{building}-{unit}", "in one unit"
            labels["unit"] = unit
        else:
            zone, where = f"{building}-F{floor}", "on one floor"
        if floor is not None:
            labels["floor"] = str(floor)
        labels["devices"] = ",".join(devices)
        started = min([alert.started_at, *(o.started_at for o in same_unit + same_floor)])
        return [
            system.FIRE_CONFIRMED.transition(
                _zone_id(zone),
                firing=True,
                at=started,
                summary=f"Fire confirmed: two smoke detectors in alarm {where}",
                labels=labels,
            )
        ]

    def _residents_of(self, smoke: Alert) -> list[Transition]:
        building, unit = smoke.building, smoke.labels.get("unit")
        if not building or not unit:
            return []
        out: list[Transition] = []
        for device_id in self._wearables.get((building, unit), ()):
            for a in self.store.open_alerts(device_id):
                if a.rule_id in RESIDENT_RULES and a.labels.get("correlated") != CORRELATED:
                    out.append(raise_to_critical(a))
        return out

    def _smoke_in_home(self, alert: Alert) -> bool:
        building, unit = alert.building, alert.labels.get("unit")
        if not building or not unit or alert.labels.get("correlated") == CORRELATED:
            return False
        return any(s.labels.get("unit") == unit for s in self._open_smoke(building))


def raise_to_critical(alert: Alert) -> Transition:
    """A fire of ``alert``'s own rule at critical: the store updates the open alert."""
    return Transition(
        action="fire",
        rule_id=alert.rule_id,
        device_id=alert.device_id,
        kind=alert.kind,
        severity="critical",
        signal="alarm",
        route=alert.route,
        at=alert.last_match_at,
        summary=alert.summary,
        value=alert.value,
        labels=alert.labels | {"correlated": CORRELATED},
    )


def _zone_id(zone: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "-" for c in zone)[:64]


def synthetic_rules() -> Sequence[tuple[str, str, str]]:
    """(id, kind, severity) of what this module raises, for the silences' critical check."""
    r = system.FIRE_CONFIRMED
    return [(r.id, r.kind, r.severity)]

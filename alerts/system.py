"""Alerts jiayuan raises itself (no rule file): one definition each, and one way to build them.

A system alert is a :class:`rules.transitions.Transition` like a rule's, so it goes through the same
store, lifecycle, stages and console. Its rule id says what it is about; its ``device_id`` is
the subject (a staff id, a building, a route, ``influxdb``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from alerts.model import Alert
from rules.transitions import Route, Severity, Signal, Transition


@dataclass(frozen=True, slots=True)
class SystemRule:
    id: str
    kind: str
    severity: Severity
    signal: Signal
    route: Route
    summary: str

    def transition(
        self,
        subject: str,
        *,
        firing: bool,
        at: float,
        labels: dict[str, str] | None = None,
        summary: str | None = None,
        severity: Severity | None = None,
    ) -> Transition:
        """Raise (``firing``) or clear this alert about ``subject``."""
        return Transition(
            action="fire" if firing else "clear",
            rule_id=self.id,
            device_id=subject,
            kind=self.kind,
            severity=severity or self.severity,
            signal=self.signal,
            route=self.route,
            at=at,
            summary=summary or self.summary,
            labels=labels or {},
        )

    def raised(self, a: Alert) -> bool:
        return a.rule_id == self.id


FIRE_CONFIRMED: Final = SystemRule(
    "fire_confirmed", "smoke", "critical", "alarm", "security",
    "Fire confirmed: two smoke detectors in alarm",
)  # fmt: skip
BUILDING_TROUBLE: Final = SystemRule(
    "building_trouble", "building", "major", "trouble", "operator",
    "Trouble from many devices in one building (power or network cut?)",
)  # fmt: skip
STAFF_UNREACHABLE: Final = SystemRule(
    "staff_unreachable", "staff", "major", "trouble", "operator",
    "A staff member cannot be reached on any channel",
)  # fmt: skip
NOBODY_REACHED: Final = SystemRule(
    "nobody_reached", "system", "major", "trouble", "operator",
    "Alerts reached nobody: nobody on duty for them",
)  # fmt: skip
STORE_UNREACHABLE: Final = SystemRule(
    "timeseries_store_unreachable", "system", "major", "trouble", "operator",
    "InfluxDB unreachable: readings wait in the journal",
)  # fmt: skip
STORE_DEVICE: Final = "influxdb"
"""The subject of :data:`STORE_UNREACHABLE`."""

SYSTEM_RULES: Final[dict[str, SystemRule]] = {
    r.id: r
    for r in (
        FIRE_CONFIRMED, BUILDING_TROUBLE, STAFF_UNREACHABLE, NOBODY_REACHED, STORE_UNREACHABLE
    )
}  # fmt: skip

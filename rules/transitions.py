"""What the rule engine hands downstream: a rule firing or clearing for one device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["critical", "major", "minor", "warning", "info"]
Signal = Literal["alarm", "supervisory", "trouble"]
Route = Literal["security", "caretaker", "manager", "operator"]
SEVERITY_ORDER: dict[str, int] = {"critical": 0, "major": 1, "minor": 2, "warning": 3, "info": 4}


@dataclass(frozen=True, slots=True)
class Transition:
    """A rule starts (``fire``) or stops (``clear``) matching for a device.

    ``fingerprint`` (rule and device) identifies the alert downstream.
    """

    action: Literal["fire", "clear"]
    rule_id: str
    device_id: str
    """The device; for an alert the service raises about something else (a staff member, a
    building, a fire zone, a part of the service) that subject: see ``alerts.model.SUBJECTS``."""
    kind: str
    severity: Severity
    signal: Signal
    route: Route
    at: float
    """Event time the condition started (fire) or ended (clear), epoch seconds."""
    summary: str
    """Short, for staff, no health values: e.g. ``Fall detected``."""
    late: bool = False
    """Raised from readings that arrived late (buffered, uploaded in a burst)."""
    value: float | None = None
    """The measured value that triggered it, when there is one (kept out of logs)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Where: ``community``, ``compound``, ``building``, ``unit``, ``resident_id``."""
    page_at: float | None = None
    """Fire: paging may start only at this time (epoch seconds) — the end of a verification
    or persistence window; None: at once. Clear (a cancel within a verification window):
    resolves the alert only if this window raised it (an alert raised by an earlier fall,
    already paged, stays open)."""
    reason: str = ""
    """Clear: why, for the alert's history (e.g. cancelled within the verification window)."""

    @property
    def fingerprint(self) -> str:
        return f"{self.rule_id}:{self.device_id}"

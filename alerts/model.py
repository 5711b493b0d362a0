"""What the alert store hands out: alerts, their history entries, changes, and its errors.

Times are epoch seconds (UTC); the API turns them into RFC 3339 at its edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypedDict, get_args

from rules.transitions import Route, Severity, Signal

Status = Literal["firing", "acknowledged", "resolved"]
STATUSES: tuple[Status, ...] = get_args(Status)
OPEN_STATUSES: tuple[Status, ...] = ("firing", "acknowledged")

Action = Literal[
    "raised",
    "rematched",
    "acknowledged",
    "resolved",
    "auto_resolved",
    "offline",
    "online",
    "note",
    "notified",
    "escalated",
    "muted",
    "unreached",
    "coalesced",
]
"""What a history entry records. ``note``, ``notified``, ``escalated`` and ``muted`` change no
state: they are written with :meth:`alerts.AlertStore.add_note` by people and by later stages
(``notified``: whom an alert was sent to and why, and each delivery attempt; ``escalated``: a
later step of its chain or a repeat; ``muted``: held back by a silence; ``unreached``: a step,
and every fallback, found nobody to page; ``coalesced``: a person already paged for the
alert's incident was not paged again, or got it folded into one message)."""
NoteAction = Literal["note", "notified", "escalated", "muted", "unreached", "coalesced"]

Sort = Literal["priority", "newest", "oldest"]
"""``priority``: open before resolved, firing before acknowledged, alarm before supervisory
before trouble (a trouble never hides an alarm), most severe first, then oldest first;
resolved ones last, most recently resolved first.
``newest``/``oldest``: by ``raised_at``."""

RULE = "rule"
"""``by`` of what the rule engine did (raise, rematch, auto-resolve)."""
SYSTEM = "system"
"""``by`` of what the service itself did (offline and online flags)."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    """Increases with every change in the store: a change feed position."""
    alert_id: int
    at: float
    """When jiayuan recorded the change."""
    action: Action
    by: str
    """A staff id, ``rule`` or ``system``."""
    note: str = ""
    data: dict[str, Any] | None = None
    """The structured part of a paging entry (see :mod:`alerts.paging`): ``kind`` ``page``
    (``step``, ``steps``, ``purpose``, ``people``: staff id, name, role, reason), ``delivery``
    (``staff_id``, ``name``, ``channel``, ``outcome``, ``attempt``, ``error``), ``unreached``
    or ``coalesced``."""


SUBJECTS: dict[str, str] = {
    "staff": "the staff member's id (staff_unreachable: nobody could reach them)",
    "building": "the building's id (building_trouble: many devices of one building at once)",
    "system": "the part of the service in trouble (``influxdb``: the time-series sink)",
}
"""What :attr:`Alert.device_id` names when the alert is not about one device, by the alert's
``kind``. A confirmed fire (``fire_confirmed``, kind ``smoke``) names its fire zone, and its
detectors in ``labels["devices"]``. Every other kind is a device kind and names the device."""


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    fingerprint: str
    """``rule_id:device_id``: one open alert per fingerprint."""
    rule_id: str
    device_id: str
    """The alert's subject: the device, for a rule about devices (nearly all); for the service's
    own alerts, what :data:`SUBJECTS` says for its ``kind``. The name stays ``device_id`` in the
    store, the API and silences (it is the contract's), so silences and filters by it work for
    both."""
    kind: str
    severity: Severity
    signal: Signal
    route: Route
    summary: str
    status: Status
    labels: dict[str, str]
    """``community``, ``compound``, ``building``, ``unit``, ``resident_id`` (those known)."""
    started_at: float
    """Event time the condition started (the earliest match)."""
    last_match_at: float
    """Event time of the latest match."""
    raised_at: float
    """When jiayuan raised it."""
    updated_at: float
    ended_at: float | None = None
    """Event time the rule cleared, for an alert the rule resolved."""
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    late: bool = False
    """Raised from readings that arrived late."""
    offline: bool = False
    """The device is offline (the alert stays open)."""
    offline_since: float | None = None
    match_count: int = 1
    value: float | None = field(default=None, repr=False)
    """The value of the latest match. A health value: never log it."""
    history: tuple[HistoryEntry, ...] = ()
    """Filled by :meth:`alerts.AlertStore.get` only; listings leave it empty."""
    incident_id: int | None = None
    """The incident it belongs to (:mod:`alerts.incidents`), once the dispatcher placed it."""
    false_alarm: bool = False
    """Resolved by a person as a false alarm."""
    page_at: float | None = None
    """Paging starts no earlier than this (the rule's verification window); None: at once."""

    @property
    def is_open(self) -> bool:
        return self.status != "resolved"

    @property
    def building(self) -> str | None:
        return self.labels.get("building")


class AlertQuery(TypedDict, total=False):
    """Which alerts: the filters of :meth:`alerts.AlertStore.find`, turned into SQL by
    :func:`alerts.db.filters` (the API's ``GET /api/alerts`` takes the same, less ``open_only``
    and ``audience``; a test holds them together). Each is an :class:`Alert` field (``building``:
    its property) but ``since``/``until`` (bound ``started_at``), ``open_only`` and
    ``audience``."""

    status: Status | Sequence[Status] | None
    """One status or several."""
    severity: str | Sequence[str] | None
    """One severity or several."""
    kind: str | None
    building: str | None
    device_id: str | None
    rule_id: str | None
    community: str | Sequence[str] | None
    """One community or several (the alert's ``community`` label)."""
    since: float | None
    until: float | None
    open_only: bool
    audience: Audience | None
    """Only what a reader may see (None: everything)."""


IN_FIRE: Final = "smoke_alarm"
"""The ``correlated`` label of a resident's alert raised by a smoke alarm at home."""


@dataclass(frozen=True, slots=True)
class Audience:
    """Whose alerts a reader may see: ``everyone``, or those any clause admits — of one of
    ``devices``, of a device kind in ``kinds``, on a route in ``routes``, a resident's alert
    raised by a smoke alarm at home when ``fire_residents``, or sent (a delivery in the outbox)
    to the staff member ``delivered_to``. An empty audience admits nothing."""

    everyone: bool = False
    devices: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    routes: frozenset[str] = frozenset()
    fire_residents: bool = False
    """Residents' alerts in a burning home (label ``correlated=smoke_alarm``,
    :mod:`alerts.correlation`): someone to look for in a fire."""
    delivered_to: str | None = None
    communities: frozenset[str] | None = None
    """Only alerts of these communities (their ``community`` label), whatever else admits
    them; None: of every community (one installation, one community: always None)."""

    @property
    def restricts(self) -> bool:
        """Whether some alerts are not admitted (SQL: :func:`alerts.db.audience_clause`)."""
        return not self.everyone or self.communities is not None

    def admits(self, alert: Alert) -> bool | None:
        """True or False when the alert alone decides; None when only the outbox can tell
        (``delivered_to``): see :meth:`alerts.AlertStore.admits`."""
        if self.communities is not None and alert.labels.get("community") not in self.communities:
            return False
        if (
            self.everyone
            or alert.device_id in self.devices
            or alert.kind in self.kinds
            or alert.route in self.routes
            or (self.fire_residents and alert.labels.get("correlated") == IN_FIRE)
        ):
            return True
        return None if self.delivered_to else False


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One committed change: the alert as it is after it, and the history entry recording it."""

    alert: Alert
    entry: HistoryEntry

    @property
    def action(self) -> Action:
        return self.entry.action


class AlertError(Exception):
    """Base of the store's refusals."""


class AlertNotFound(AlertError, LookupError):
    def __init__(self, alert_id: int) -> None:
        super().__init__(f"alert {alert_id} not found")
        self.alert_id = alert_id


class InvalidTransition(AlertError):
    """The alert is not in a state that allows the action (e.g. acknowledging a resolved one).

    Carries what the caller needs to explain it: the alert's status and who put it there when.
    """

    def __init__(
        self,
        alert: Alert,
        action: Literal["acknowledge", "resolve"],
        by: str | None,
        at: float | None,
    ) -> None:
        who = f" by {by}" if by else ""
        super().__init__(f"alert {alert.id} is {alert.status}{who}; cannot {action} it")
        self.alert_id = alert.id
        self.status: Status = alert.status
        self.action = action
        self.by = by
        self.at = at

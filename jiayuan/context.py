"""What the API needs from the running service, gathered in one object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ingest.journal_store import JournalStore
from ingest.ways import WaysIn
from jiayuan.settings import Settings
from registry import Registry

if TYPE_CHECKING:
    from alerts.dispatch import Dispatcher
    from alerts.lifecycle import AlertStore
    from jiayuan.auth.store import AuthStore
    from jiayuan.integrations import PushSetup
    from jiayuan.registry_admin import RegistryAdmin


@dataclass
class AppContext:
    settings: Settings
    journal: JournalStore
    alerts: AlertStore
    registry: Registry
    """The registry as it is now (replaced at each change: read it once per request)."""
    health: Callable[[], dict[str, Any]] = field(default=lambda: {"status": "ok"})
    """Live health of the parts (MQTT connected, ingest queue, …) for /healthz."""
    alerting: Dispatcher | None = None
    """Silences, escalation timers, deliveries (None: the alerting routes answer 503)."""
    auth: AuthStore | None = None
    """Passwords, sessions, tokens, audit (None: ``create_app`` opens ``auth.db`` in the data
    directory)."""
    registry_admin: RegistryAdmin | None = None
    """Changes to the registry while running (None: the registry routes answer 503)."""
    ways: WaysIn | None = None
    """Each registered device's one way in, checked on pushed messages, and how unregistered
    devices were first heard (commissioning); the pipeline's (None: not checked)."""
    push: PushSetup | None = None
    """Integrations, their tokens and the pipeline's intake for ``POST /api/push/{integration}``
    (None: every push is answered 404)."""

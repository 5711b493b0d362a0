"""Each device id belongs to one way in: the registry's ``via`` (native MQTT under the device's
own broker account, a device profile, or a push integration), checked where a reading is
translated (the pipeline's profiles, the push endpoint's mapping).

:class:`WaysIn` holds the registry the check reads (swapped at each registry change by its
hook, :meth:`WaysIn.set_registry`) and remembers how each unregistered id was first heard,
so that commissioning registers it with that way in.
"""

from __future__ import annotations

import threading
from typing import Final

from registry.models import Registry, wrong_way

MAX_HEARD: Final = 50_000
"""Unregistered ids whose way in is remembered at most (the first heard are kept)."""


class WaysIn:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        """The registry as it is now: replaced whole (one reference read per check)."""
        self.communities = _communities(registry)
        """The installation's communities when it declares several (a topic of another is a
        dead letter, ``unknown_community``); None: one community, any topic's taken."""
        self._heard: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def set_registry(self, registry: Registry) -> None:
        """The registry-change hook: the next check reads ``registry``; ids it registers are
        no longer remembered as heard."""
        self.registry = registry
        self.communities = _communities(registry)
        with self._lock:
            for device_id in [d for d in self._heard if d in registry.devices]:
                del self._heard[device_id]

    def refusal(self, device_id: str, via: str | None) -> str | None:
        """Why a reading of ``device_id`` that came ``via`` (None: native MQTT) is refused,
        or None; an unregistered id is accepted, and the way it came first remembered."""
        device = self.registry.devices.get(device_id)
        if device is None:
            if device_id not in self._heard:
                with self._lock:
                    if len(self._heard) < MAX_HEARD:
                        self._heard.setdefault(device_id, via)
            return None
        return wrong_way(device, via)

    def community_of(self, device_id: str) -> str | None:
        """The community ``device_id`` is registered in now; None when it is not registered."""
        return self.registry.community_of(device_id)

    def heard(self, device_id: str) -> str | None:
        """How the unregistered ``device_id`` was first heard: a profile's or an integration's
        id, or None (native MQTT, or not heard since the service started)."""
        return self._heard.get(device_id)


def _communities(registry: Registry) -> frozenset[str] | None:
    return frozenset(registry.parts) if len(registry.parts) > 1 else None

"""Devices' last-seen times and batteries, kept in memory between a journal's writes.

Both journals (:class:`ingest.journal.Journal` on SQLite, :class:`ingest.journal_pg.PgJournal`
on PostgreSQL) note every batch's readings here and write what waits, in one statement, with a
batch at most every :data:`SEEN_FLUSH_S` seconds (or sooner, when a device's state is written or
too many devices wait): not one row update per message. What each writes is the same upsert of
``devices`` (last seen only moves forward, first seen and community are kept once known, the
battery is the latest reported), in its own SQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from ingest.payloads import Reading

SEEN_FLUSH_S: Final = 1.0
"""How long a device's last-seen time may wait in memory for a batch's transaction."""
SEEN_MAX: Final = 50_000
"""Devices whose last-seen time may wait in memory for the next write: past it, the batch
writes them at once (so 200,000 devices never seen before cost no more memory than this)."""

Touch = tuple[str, str, str, float, float | None]
"""What waits for one device: (device id, kind, community, last received, battery or None)."""
State = tuple[str, bool, float, str | None]
"""A status message's device state: (device id, online, at, firmware or None)."""


class SeenDevices:
    """The devices heard since the last write of ``devices``, with what to write of each."""

    def __init__(self, most: int = SEEN_MAX, clock: Callable[[], float] = time.monotonic) -> None:
        """``most``: see :data:`SEEN_MAX`."""
        self._pending: dict[str, list[Any]] = {}
        self._most = most
        self._clock = clock
        self._flushed = clock()

    def __len__(self) -> int:
        return len(self._pending)

    def note(self, readings: Sequence[Reading]) -> None:
        """Keep each reading's device, receive time and battery (the latest given) for the next
        write."""
        pending = self._pending
        for r in readings:
            prev = pending.get(r.device_id)
            battery = r.values.get("battery")
            if prev is None:
                pending[r.device_id] = [
                    r.kind,
                    r.community,
                    r.received,
                    None if battery is None else float(battery),
                ]
            else:
                if r.received > prev[2]:
                    prev[2] = r.received
                if battery is not None:
                    prev[3] = float(battery)

    def due(self) -> bool:
        """Whether a batch's transaction should write what waits now: it has waited
        :data:`SEEN_FLUSH_S`, or too many devices wait."""
        return self._clock() - self._flushed > SEEN_FLUSH_S or len(self._pending) >= self._most

    def waiting(self, *, if_due: bool = False) -> bool:
        """Whether devices wait (with ``if_due``: and the last write is :data:`SEEN_FLUSH_S`
        ago), for a journal's ``flush``."""
        return bool(self._pending) and (not if_due or self._clock() - self._flushed >= SEEN_FLUSH_S)

    def take(self) -> list[Touch]:
        """What waits, by device id (one order on every instance: two instances' upserts never
        deadlock), forgotten here: the caller writes it in the transaction it is in."""
        out = [(d, k, c, at, b) for d, (k, c, at, b) in sorted(self._pending.items())]
        self._pending.clear()
        self._flushed = self._clock()
        return out


def device_states(readings: Sequence[Reading]) -> list[State]:
    """The device states that status messages of ``readings`` report, by device id (each
    device's in arrival order: the later one wins when it is as new)."""
    return sorted(
        (
            (r.device_id, r.event == "online", r.ts, r.attrs.get("fw"))
            for r in readings
            if r.stream == "status" and r.event is not None
        ),
        key=lambda s: s[0],
    )

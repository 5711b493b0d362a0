"""How far an instance's clock is from the database's.

Leases, claims and the journal's day bound run on the database's clock, so instances' clocks
do not decide who holds what. Much else runs on the instance's own clock: the receive time of
every message (against which a device's own time is believed, up to ``MAX_FUTURE_S`` ahead and
a day behind), the rules worker's absence timers and an alert's raised time, the dispatcher's
escalation steps. With several instances, a clock out by a minute moves those by a minute
against the other instances' (a fall paged a minute late, a device heard "in the future"), and
nothing else would say so. So the health probe, which connects anyway, also reads the
database's clock (:func:`measure`), ``/metrics`` shows the offset
(``jiayuan_clock_offset_seconds``) and ``/healthz`` names an offset past
``JIAYUAN_HEALTH_CLOCK_OFFSET_S`` (60 s) as a problem (:func:`problem`): past a minute,
escalation steps and absence windows, which last minutes, fire a good part of their time early
or late, and from two minutes on an instance behind judges every device's own time "ahead".

The offset is the database's clock minus this instance's at the midpoint of a round trip, the
best of a few (the shortest round trip), give or take half that trip.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from prometheus_client import Gauge

CLOCK_OFFSET = Gauge(
    "jiayuan_clock_offset_seconds",
    "The database's clock minus this instance's, at the last health probe: positive when this"
    " instance's clock is behind (NaN: not known, the database unreachable or SQLite)",
)
CLOCK_OFFSET.set(math.nan)

SAMPLES = 3
"""Round trips a measurement takes; the shortest one counts."""


@dataclass(frozen=True, slots=True)
class ClockOffset:
    offset_s: float
    """The database's clock minus this instance's (positive: this instance is behind)."""
    error_s: float
    """Half the round trip: the true offset lies within ``offset_s`` ± this."""


def measure(
    db: psycopg.Connection[Any], *, clock: Callable[[], float] = time.time, samples: int = SAMPLES
) -> ClockOffset:
    """The offset of the database's clock from ``clock``, over ``samples`` round trips."""
    best: ClockOffset | None = None
    for _ in range(max(1, samples)):
        before = clock()
        row = db.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        after = clock()
        assert row is not None
        found = ClockOffset(float(row[0]) - (before + after) / 2, (after - before) / 2)
        if best is None or found.error_s < best.error_s:
            best = found
    assert best is not None
    CLOCK_OFFSET.set(best.offset_s)
    return best


def problem(found: ClockOffset, limit_s: float) -> str | None:
    """What ``/healthz`` says of an offset surely past ``limit_s`` seconds, or None. It does
    not say which clock is wrong: every instance off by the same offset points at the
    database's."""
    apart = abs(found.offset_s)
    if apart - found.error_s <= limit_s:
        return None
    way = "behind" if found.offset_s > 0 else "ahead"
    return (
        f"this instance's clock and the database's are {apart:.0f} s apart (this one {way};"
        f" more than {limit_s:g} s): receive times, rule timers and escalation steps are off by"
        " as much; set the wrong one right (NTP)"
    )


def unknown() -> None:
    """No offset to show (the database unreachable, or none: SQLite)."""
    CLOCK_OFFSET.set(math.nan)

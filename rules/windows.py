"""Time windows: a rule limited to local days and hours (``active: {days: [...], hours: ...}``).

Days and hours are in the community's time zone (settings ``timezone``). An hours range may run
past midnight (``22:00-05:00``): it then belongs to the day it starts on, so ``days: [fri]``
with ``hours: "22:00-05:00"`` is Friday 22:00 to Saturday 05:00. A window limits only what
fires; clears are never held back, so no alert is left open by a window closing.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DAYS", "ActiveWindow", "Where", "Window"]

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: Final[tuple[Day, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class ActiveWindow(BaseModel):
    """When a rule may fire: ``days`` (default every day) and ``hours`` ``HH:MM-HH:MM``
    (default all day; may wrap midnight)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: tuple[Day, ...] = Field(default=DAYS, min_length=1)
    hours: str = "00:00-24:00"

    @field_validator("hours")
    @classmethod
    def _range(cls, v: str) -> str:
        m = _HOURS.match(v.strip())
        if m is None:
            raise ValueError(f"expected HH:MM-HH:MM (e.g. 22:00-05:00), got {v!r}")
        a, b = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
        if a > 1440 or b > 1440 or a == b or a == 1440:
            raise ValueError(f"{v!r} is not a range of the day (start and end differ, ≤ 24:00)")
        return v.strip()

    def bounds(self) -> tuple[int, int]:
        """(start, end) in minutes of the day; end < start when it wraps midnight."""
        m = _HOURS.match(self.hours)
        assert m is not None
        return int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])


class Where(BaseModel):
    """Which devices of the kind a rule applies to: ``building: true`` only those placed in a
    building (a building's door), ``false`` only those that are not (a compound's entrance)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    building: bool | None = None


class Window:
    """An :class:`ActiveWindow` compiled for one time zone: is an epoch time inside, and when
    did the window it is in start."""

    def __init__(self, spec: ActiveWindow, tz: tzinfo) -> None:
        self.tz = tz
        self.days = frozenset(DAYS.index(d) for d in spec.days)
        self.start, self.end = spec.bounds()
        self.wraps = self.end < self.start

    def opened_at(self, t: float) -> float | None:
        """The epoch time the window holding ``t`` opened, or None when ``t`` is outside."""
        local = datetime.fromtimestamp(t, self.tz)
        minute = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 6e7
        day = local.weekday()
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if not self.wraps:
            if day in self.days and self.start <= minute < self.end:
                return _at(midnight, self.start)
            return None
        if minute >= self.start and day in self.days:
            return _at(midnight, self.start)
        if minute < self.end and (day - 1) % 7 in self.days:
            return _at(midnight - timedelta(days=1), self.start)
        return None

    def contains(self, t: float) -> bool:
        return self.opened_at(t) is not None


def _at(midnight: datetime, minute: int) -> float:
    """Epoch of ``minute`` past a local midnight (wall-clock arithmetic, then the zone)."""
    local = midnight.replace(tzinfo=None) + timedelta(minutes=minute)
    tz = midnight.tzinfo
    assert tz is not None
    return local.replace(tzinfo=tz).timestamp()

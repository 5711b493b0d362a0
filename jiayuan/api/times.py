"""Times at the HTTP edge: the journal and the alert store keep epoch seconds, responses carry
RFC 3339 UTC strings (pydantic writes an aware UTC ``datetime`` as ``…Z``), and query times
must say their offset."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, overload


@overload
def utc(ts: float) -> datetime: ...
@overload
def utc(ts: None) -> None: ...
def utc(ts: float | None) -> datetime | None:
    """Epoch seconds → an aware UTC datetime (None stays None). A stored time past what a
    datetime holds (year 1 to 9999; an old row, a huge value) is shown at the nearest end
    rather than failing the response."""
    if ts is None:
        return None
    if not FIRST_TS <= ts <= LAST_TS:  # NaN too
        ts = FIRST_TS if ts < 0 else LAST_TS
    return datetime.fromtimestamp(ts, UTC)


FIRST_TS: Final = datetime(1, 1, 2, tzinfo=UTC).timestamp()
LAST_TS: Final = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


def epoch(dt: datetime | None) -> float | None:
    """An aware datetime from a query → epoch seconds (None stays None)."""
    return None if dt is None else dt.timestamp()


def rfc3339(ts: float) -> str:
    """Epoch seconds → the same RFC 3339 UTC text the responses carry, for messages."""
    return utc(ts).isoformat().replace("+00:00", "Z")

"""Reading a device's history when some stored payloads cannot be parsed back.

A journal may hold payloads that an older decoder accepted and that ``json.loads`` now
refuses: an integer past Python's 4,300-digit limit, arrays nested past the recursion limit.
:meth:`ingest.journal.Journal.readings` parses every row of the window and raises for such a
row, which would make the whole window unreadable (a 500). :func:`readings_around` keeps the
rest: it halves the window around whatever fails until the failing rows are pinned to an
instant, and leaves those out (logged, counted).

The root fix belongs in the journal (parse each payload on its own and keep an unparsable one
as text); this is the API's edge until then.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol

log = logging.getLogger("jiayuan.api")

UNREADABLE: Final = (ValueError, RecursionError)
"""What ``json.loads`` raises on a payload it cannot represent."""
INSTANT: Final = 0.001
"""Windows are halved down to a millisecond, the resolution of device times."""
MAX_QUERIES: Final = 2000
"""A bound on the work one request may cause; past it the answer is cut (``truncated``)."""


class ReadingsOf(Protocol):
    def __call__(self, *, since: float, until: float, limit: int) -> list[dict[str, Any]]: ...


def readings_around(
    read: ReadingsOf, since: float, until: float, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """The readings ``read`` gives for [since, until), up to ``limit``, leaving out rows it
    cannot parse; and how many instants were left out."""
    out: list[dict[str, Any]] = []
    skipped = 0
    queries = 0
    pending = [(since, until)]  # a stack, earliest window on top
    while pending and len(out) < limit and queries < MAX_QUERIES:
        lo, hi = pending.pop()
        queries += 1
        try:
            out += read(since=lo, until=hi, limit=limit - len(out))
            continue
        except UNREADABLE:
            pass
        if hi - lo <= INSTANT:
            skipped += 1
            continue
        mid = lo + (hi - lo) / 2
        pending += [(mid, hi), (lo, mid)]
    if skipped or queries >= MAX_QUERIES:
        log.warning(
            "readings: left out %d instant(s) whose stored payloads cannot be parsed%s",
            skipped,
            " (stopped early)" if queries >= MAX_QUERIES else "",
        )
    return out, skipped


MAX_DEPTH: Final = 32
"""Containers in a stored payload nested deeper than this are not shown (the response's JSON
serializer stops at a depth of its own, with an error)."""


def shown(value: Any, depth: int = 0) -> Any:
    """A stored value as a response can carry it: containers past :data:`MAX_DEPTH` become
    None; everything else is kept."""
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            return None
        if isinstance(value, dict):
            return {k: shown(v, depth + 1) for k, v in value.items()}
        return [shown(v, depth + 1) for v in value]
    return value

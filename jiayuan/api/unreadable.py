"""Stored payloads as a response can carry them.

The journal parses each stored payload on its own (one it cannot parse back reads as ``{}``,
:func:`ingest.journal._body`), so a window of readings always reads; what is left for the API's
edge is the depth the response's JSON serializer can encode.
"""

from __future__ import annotations

from typing import Any, Final

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

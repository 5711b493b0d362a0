"""What the stores keep of a reading's payload: the typed measurements of each kind's telemetry,
read off the payload models so that a field added there reaches the stores without a second
list to keep in step.

The journal keeps every payload as it came; the InfluxDB sink writes these fields (and no
unknown ones) with a type fixed per field; the rollups aggregate :data:`ROLLUP_METRICS`.
"""

from __future__ import annotations

import types
import typing
from typing import Final, Literal

from ingest.payloads import MODELS

FieldType = Literal["float", "int", "bool"]

_SKIP: Final = frozenset({"ts", "seq"})
_NOT_ROLLED_UP: Final = frozenset({"lat", "lon"})
"""Positions: a mean latitude says nothing; the zone rules and the raw history keep them."""


def _field_type(annotation: object) -> FieldType | None:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    base = [a for a in args if a is not type(None)] if args else [annotation]
    if len(base) != 1:
        return None
    t = base[0]
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "float"
    return None


def _telemetry_fields() -> dict[str, dict[str, FieldType]]:
    out: dict[str, dict[str, FieldType]] = {}
    for (kind, stream), model in MODELS.items():
        if stream != "telemetry":
            continue
        fields: dict[str, FieldType] = {}
        for name, info in model.model_fields.items():
            t = _field_type(info.annotation)
            if name not in _SKIP and t is not None:
                fields[name] = t
        out[kind] = fields
    return out


TELEMETRY_FIELDS: Final[dict[str, dict[str, FieldType]]] = _telemetry_fields()
"""kind → {field: type} of the measurements a telemetry message may carry, e.g.
``wearable`` → ``{"heart_rate": "float", "steps": "int", "worn": "bool", …}``."""

ROLLUP_METRICS: Final[dict[str, tuple[str, ...]]] = {
    kind: tuple(f for f in fields if f not in _NOT_ROLLED_UP)
    for kind, fields in TELEMETRY_FIELDS.items()
    if any(f not in _NOT_ROLLED_UP for f in fields)
}
"""kind → the metrics kept per minute and per hour (booleans count as 0/1: the mean of
``worn`` is the share of the time a wearable was worn)."""


def kinds_with_metric(metric: str) -> tuple[str, ...]:
    """The device kinds whose rollups hold ``metric`` (none: it is not rolled up)."""
    return tuple(k for k, ms in ROLLUP_METRICS.items() if metric in ms)

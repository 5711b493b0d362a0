"""InfluxDB line protocol for journal rows, formatted by hand: about 1–2 µs a reading, where
building an ``influxdb_client.Point`` costs several times that.

The schema (see the README, "Time-series store (InfluxDB)"):

- measurement: the device kind for telemetry (``wearable``, ``smoke``, ``gate``),
  ``<kind>_event`` for events, ``<kind>_status`` for status messages;
- tags: ``building``, ``community``, ``compound``, ``device_id`` (sorted, empty ones left out);
- fields: a telemetry message's known measurements with one type per field (floats, ``steps``
  an integer, ``worn`` a boolean; unknown and non-finite values are not written); an event's
  name as the string field ``event`` with ``count=1i`` (and a gate's ``direction`` and
  ``method``, never its ``credential``); a status as ``online`` (boolean) and ``fw``;
- timestamp: the reading's event time in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final

from pydantic_core import from_json

from ingest import rowcodec
from ingest.schema import TELEMETRY_FIELDS, FieldType

PRECISION: Final = "ms"

Row = tuple[int, str, str, str, int, str | None, bytes | str]
"""A journal row as the sink reads it: id, device_id, kind, stream, event time in
milliseconds, event, payload."""
COLUMNS: Final = "id, device_id, kind, stream, CAST(round(ts * 1000) AS INTEGER), event, payload"

_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ ", "\\": "\\\\", "\n": "\\ ", "\r": "\\ "})
_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\\": "\\\\", "\n": "\\ ", "\r": "\\ "})
_STRING = str.maketrans({'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r"})
_GATE_TEXT: Final = ("direction", "method")


def measurement(name: str) -> str:
    """Escape a measurement name: commas, spaces and backslashes; a line break becomes a space
    (line protocol has no escape for it)."""
    return name.translate(_MEASUREMENT)


def key(text: str) -> str:
    """Escape a tag key, tag value or field key: commas, equals signs, spaces, backslashes."""
    return text.translate(_KEY)


def string(text: str) -> str:
    """A string field value, quoted: double quotes and backslashes escaped."""
    return '"' + text.translate(_STRING) + '"'


def number(value: object, kind: FieldType) -> str | None:
    """A field value of the field's declared type, or None when it cannot be written as one
    (a non-finite float, which InfluxDB refuses; a value of another type)."""
    if kind == "bool":
        return ("true" if value else "false") if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind == "int":
        return f"{value}i" if isinstance(value, int) else None
    if isinstance(value, int):
        return str(value)  # no suffix: a float in line protocol
    return repr(value) if math.isfinite(value) else None


def tag_set(tags: Iterable[tuple[str, str | None]]) -> str:
    """``,k=v,…`` sorted by key, empty values left out."""
    return "".join(f",{key(k)}={key(v)}" for k, v in sorted(tags) if v)


class LineFormatter:
    """Turns journal rows into lines, with each device's tags from the journal's ``devices``
    table (its registry placement); a device not known there yet gets ``community`` only."""

    def __init__(self, community: str) -> None:
        self.community = community
        self._tags: dict[str, str] = {}
        self._prefix: dict[tuple[str, str, str], str] = {}
        self._fields = {
            kind: {name: (key(name) + "=", t) for name, t in fields.items()}
            for kind, fields in TELEMETRY_FIELDS.items()
        }

    def set_devices(self, rows: Iterable[tuple[str, str | None, str | None, str | None]]) -> None:
        """(device_id, community, compound, building) of every known device."""
        self._tags = {
            dev: tag_set(
                (
                    ("building", building),
                    ("community", community or self.community),
                    ("compound", compound),
                    ("device_id", dev),
                )
            )
            for dev, community, compound, building in rows
        }
        self._prefix.clear()

    def knows(self, device_id: str) -> bool:
        return device_id in self._tags

    def _line_start(self, device_id: str, kind: str, stream: str) -> str:
        k = (device_id, kind, stream)
        p = self._prefix.get(k)
        if p is None:
            tags = self._tags.get(device_id) or tag_set(
                (("community", self.community), ("device_id", device_id))
            )
            name = kind if stream == "telemetry" else f"{kind}_{stream}"
            p = self._prefix[k] = measurement(name) + tags + " "
        return p

    def line(self, row: Row) -> str | None:
        """One line, or None when the reading has nothing to write (telemetry with no known
        measurement: a gate's keep-alive, say)."""
        _ids, lines = self.lines([row])
        return lines[0] if lines else None

    def lines(self, rows: list[Row]) -> tuple[list[int], list[str]]:
        """The lines of ``rows`` and the journal ids they come from (rows with nothing to
        write give none). The sink's hot loop: telemetry is formatted inline, on purpose."""
        ids: list[int] = []
        out: list[str] = []
        prefixes = self._prefix
        fields_of = self._fields
        for row_id, device_id, kind, stream, ms, event, payload in rows:
            if stream == "telemetry":
                known = fields_of.get(kind)
                if not known:
                    continue
                try:
                    body = _parse(payload)
                except ValueError:
                    continue
                if not isinstance(body, dict):
                    continue
                parts: list[str] = []
                for name, value in body.items():
                    spec = known.get(name)
                    if spec is None:
                        continue
                    prefix, t = spec
                    c = value.__class__
                    if c is int:
                        if t == "float":
                            parts.append(prefix + str(value))
                        elif t == "int":
                            parts.append(prefix + str(value) + "i")
                    elif c is float:
                        if t == "float" and value - value == 0.0:  # finite (inf, nan: nan)
                            parts.append(prefix + repr(value))
                    elif c is bool and t == "bool":
                        parts.append(prefix + ("true" if value else "false"))
                fields = ",".join(parts)
            elif stream == "event":
                fields = self._event(kind, event, payload)
            else:
                fields = self._status(event, payload)
            if not fields:
                continue
            start = prefixes.get((device_id, kind, stream))
            if start is None:
                start = self._line_start(device_id, kind, stream)
            ids.append(row_id)
            out.append(f"{start}{fields} {ms}")
        return ids, out

    def _event(self, kind: str, event: str | None, payload: bytes | str) -> str:
        out = f"event={string(event or '')},count=1i"
        if kind == "gate":
            body = _object(payload)
            for name in _GATE_TEXT:
                value = body.get(name)
                if isinstance(value, str):
                    out += f",{name}={string(value)}"
        return out

    def _status(self, event: str | None, payload: bytes | str) -> str:
        out = "online=" + ("true" if event == "online" else "false")
        fw = _object(payload).get("fw")
        if isinstance(fw, str):
            out += f",fw={string(fw)}"
        return out


def _parse(payload: bytes | str) -> Any:
    """A stored payload (:mod:`ingest.rowcodec`'s, or JSON text) as an object; its ``ts`` and
    ``seq`` (which no line carries) may read as 0 and None."""
    if isinstance(payload, bytes):
        return rowcodec.load(payload, 0.0, None)
    return from_json(payload)


def _object(payload: bytes | str) -> dict[str, object]:
    try:
        body = _parse(payload)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

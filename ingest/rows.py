"""Journal rows back into :class:`~ingest.payloads.Reading`: how followers that evaluate (the
rules worker, a backtest) read the log.

The journal keeps what the edge decided — event time, receive time, event name — in columns,
and the validated payload in :mod:`ingest.rowcodec`'s compact form (JSON text in rows written
before); the known measurements are read back from it. Only
fields that :func:`ingest.payloads.decode` validated reach a row, so nothing here validates
again: a value that is not a number or a boolean is skipped, never raised on.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Final, cast

from ingest import rowcodec
from ingest.payloads import MODELS, Reading
from ingest.topics import Kind, Stream

COLUMNS: Final = "id, device_id, kind, stream, ts, received, seq, event, ts_flag, payload"
"""The columns :func:`to_reading` expects, in order."""

_NOT_VALUES: Final = frozenset(
    {"ts", "seq", "event", "state", "fw", "direction", "method", "credential"}
)
_VALUES: Final[dict[tuple[str, str], frozenset[str]]] = {
    key: frozenset(model.model_fields) - _NOT_VALUES for key, model in MODELS.items()
}

Row = tuple[int, str, str, str, float, float, int | None, str | None, str | None, bytes | str]


def after(db: sqlite3.Connection, last_id: int, limit: int) -> list[Row]:
    """Up to ``limit`` journal rows after ``last_id``, oldest first."""
    return cast(
        list[Row],
        db.execute(
            f"SELECT {COLUMNS} FROM readings WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)
        ).fetchall(),
    )


def to_reading(row: Row, community: str) -> Reading:
    """One journal row as the reading the edge accepted (community: the journal holds one)."""
    _id, device_id, kind, stream, ts, received, seq, event, ts_flag, payload = row
    values: dict[str, float | bool] = {}
    names = _VALUES.get((kind, stream))
    if names and stream == "telemetry":
        data: Any
        if isinstance(payload, bytes):
            data = rowcodec.load(payload, ts, seq)
        else:  # a row written as JSON text
            try:
                data = json.loads(payload)
            except ValueError:
                data = None
        if isinstance(data, dict):
            for name in names.intersection(data):
                v = data[name]
                if isinstance(v, bool | int | float):
                    values[name] = v
    return Reading(
        community=community,
        kind=cast(Kind, kind),
        device_id=device_id,
        stream=cast(Stream, stream),
        ts=ts,
        received=received,
        seq=seq,
        values=values,
        event=event,
        ts_flag=cast(Any, ts_flag),
    )

"""How a journal row keeps its payload: compact, not as JSON text.

A reading's payload is stored as MessagePack (``msgspec.msgpack``) of the same object, in the
same key order, with each known field name (:data:`NAMES`) as its index in that table rather
than its text, and ``ts`` and ``seq`` left out when the row's columns hold them (a device's
``ts`` in milliseconds that the ``ts`` column gives back exactly, the ``seq`` column): a
wearable's telemetry takes ~15 bytes instead of ~115. :func:`load` gives back the object the
JSON text held (numbers, booleans, strings, nested values and key order as they were).

Rows written before (or a payload this encoding cannot hold) keep the JSON text: the payload
column holds either, told apart by its type (``bytes``: this encoding; ``str``: JSON), and every
reader goes through :func:`load` or, in SQL, the function :data:`SQL_FUNCTION`
(``payload_json(payload, ts, seq)``, registered on the journal's connections by
:func:`register`), which answers the JSON text for both.

Compiled with mypyc by ``make`` (devtools/compile.py): :func:`dump` 1.21 µs a payload against
1.43 as Python (``python -m bench.journal_cpu``, 2026-12-05); the same answers either way
(``tests/unit/test_compiled.py``).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Final

import msgspec

NAMES: Final[tuple[str, ...]] = (
    "ts",
    "seq",
    "heart_rate",
    "spo2",
    "skin_temp_c",
    "steps",
    "battery",
    "worn",
    "lat",
    "lon",
    "event",
    "obscuration_pct_m",
    "temperature_c",
    "co_ppm",
    "direction",
    "method",
    "credential",
    "state",
    "fw",
)
"""Field names stored as their index here. Only ever appended to: a stored row names its
fields by these numbers (tests/unit/test_journal_rows.py checks every payload model's field is
here)."""
_CODE: Final = {name: i for i, name in enumerate(NAMES)}
_TS_FROM_COLUMN: Final = 100
"""Key of ``ts`` when the value is the ``ts`` column in milliseconds (the value is nil)."""
_SEQ_FROM_COLUMN: Final = 101
"""Key of ``seq`` when the value is the ``seq`` column (the value is nil)."""

_encode: Final = msgspec.msgpack.Encoder().encode
_decode_json: Final = msgspec.json.Decoder(dict[str, Any]).decode
_decode_pack: Final = msgspec.msgpack.Decoder(dict[Any, Any]).decode

SQL_FUNCTION: Final = "payload_json"


def dump(body: bytes, ts: float, ts_flag: str | None, seq: int | None) -> bytes | str:
    """The stored form of a reading's payload (``body``, JSON that decode accepted) in a row
    whose columns hold ``ts``, ``ts_flag`` and ``seq``: compact, or the JSON text when it cannot
    be (a number MessagePack cannot hold, nesting msgspec does not follow: then readers take
    the text as before)."""
    try:
        obj = _decode_json(body)
    except (msgspec.DecodeError, RecursionError):  # nesting msgspec will not follow
        return body.decode()
    out: dict[int | str, Any] = {}
    for name, v in obj.items():
        code = _CODE.get(name)
        if code is None:
            out[name] = v
        elif code > 1:
            out[code] = v
        elif code == 0:
            if (
                ts_flag is None
                and v.__class__ is int
                and v / 1000.0 == ts
                and round(ts * 1000) == v
            ):
                out[_TS_FROM_COLUMN] = None
            else:
                out[0] = v
        elif v == seq and v.__class__ is int:
            out[_SEQ_FROM_COLUMN] = None
        else:
            out[1] = v
    try:
        return _encode(out)
    except (OverflowError, RecursionError):  # an integer past 64 bits; deep nesting
        return body.decode()


def key_of(name: str) -> int | str:
    """The key of field ``name`` in what :func:`fields` gives (its index, or its name)."""
    if name in ("ts", "seq"):
        raise ValueError(f"{name} may stand for the row's column: read it with load")
    return _CODE.get(name, name)


def keys_of(names: tuple[str, ...] | frozenset[str]) -> dict[int | str, str]:
    """What :func:`fields` gives as the keys of ``names`` (a field's index, or its name when it
    has none), and each name itself (a row kept as JSON text), each mapped to the name; ``ts``
    and ``seq`` are left out (their keys may stand for the row's columns)."""
    out: dict[int | str, str] = {}
    for name in names:
        if name in ("ts", "seq"):
            raise ValueError(f"{name} is not a field keys_of can map")
        code = _CODE.get(name)
        if code is not None:
            out[code] = name
        out[name] = name
    return out


def fields(stored: bytes) -> dict[Any, Any]:
    """A compact payload's fields as stored, keyed by index or name (:func:`load` names them;
    a reader that wants a few fields looks their keys up with :func:`keys_of` instead)."""
    return _decode_pack(stored)


def load(stored: bytes, ts: float, seq: int | None) -> dict[str, Any]:
    """The payload object of a row stored by :func:`dump` in compact form."""
    out: dict[str, Any] = {}
    for key, v in _decode_pack(stored).items():
        if key.__class__ is int:
            if key == _TS_FROM_COLUMN:
                out["ts"] = round(ts * 1000)
            elif key == _SEQ_FROM_COLUMN:
                out["seq"] = seq
            else:
                out[NAMES[key]] = v
        else:
            out[key] = v
    return out


def as_json(stored: bytes | str | None, ts: float, seq: int | None) -> str | None:
    """A stored payload as JSON text: what the row held before (for SQL's JSON functions)."""
    if stored is None or isinstance(stored, str):
        return stored
    return json.dumps(load(stored, ts, seq), ensure_ascii=False)


def register(db: sqlite3.Connection) -> sqlite3.Connection:
    """Make ``payload_json(payload, ts, seq)`` available on ``db``."""
    db.create_function(SQL_FUNCTION, 3, as_json, deterministic=True)
    return db

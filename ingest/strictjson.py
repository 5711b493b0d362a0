"""What a payload must be beyond "JSON the parser takes": the checks :func:`ingest.payloads.decode`
makes so that every message it accepts can be stored, read back and summed faithfully.

pydantic's parser (which validates the fields) is lenient where the journal cannot be: it takes
``NaN``, keeps the last of two equal keys, reads integers of any size and floats that overflow
to infinity. :func:`refusal` parses the text once more with the standard library's strict
parser and hooks that refuse those, and says why. It is the slow path: :func:`needs_scan` tells
the common payload (one flat object, no escapes, short numbers) from one that must be scanned,
and :func:`may_repeat_keys` checks such a payload's keys against what pydantic kept.

msgspec, on the hot path of :func:`ingest.payloads.decode`, is lenient in the same places but
for ``NaN`` and overflowing floats; its path reads only payloads without escapes, proves their
keys distinct the way :func:`may_repeat_keys` does, holds unknown fields to
:func:`unknown_fields_storable` and nesting to :func:`needs_scan`, and leaves everything else
to the pydantic path and :func:`refusal`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final, Literal

Refusal = Literal[
    "not_json", "not_object", "too_deep", "too_large_number", "duplicate_key", "lone_surrogate"
]

MAX_DEPTH: Final = 32
MAX_NUMBER: Final = 2**53 - 1

_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


class _Refused(ValueError):
    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.reason: Refusal = reason
        self.detail = detail


def _int(text: str) -> int:
    if len(text) <= 17:  # 2**53 has 16 digits; a sign makes 17
        v = int(text)
        if -MAX_NUMBER <= v <= MAX_NUMBER:
            return v
    raise _Refused("too_large_number", f"an integer past ±{MAX_NUMBER} (2^53 - 1)")


def _float(text: str) -> float:
    v = float(text)
    if math.isfinite(v) and -MAX_NUMBER <= v <= MAX_NUMBER:
        return v
    raise _Refused("too_large_number", f"a number past ±{MAX_NUMBER} (2^53 - 1)")


def _constant(name: str) -> float:
    raise _Refused("not_json", f"{name} is not a JSON number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Refused("duplicate_key", f"key {k[:64]!r} appears twice in one object")
            seen.add(k)
    return obj


_STRICT: Final = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_int=_int, parse_float=_float, parse_constant=_constant
)


def needs_scan(payload: bytes) -> bool:
    """Whether a payload may break a rule that only :func:`refusal` checks before pydantic
    has parsed it: escapes (a lone surrogate), nested objects (a repeated key inside), deep
    arrays. False for one flat object (nearly every payload); its numbers are then checked by
    the models and :func:`unknown_fields_storable`, its keys by :func:`may_repeat_keys`.
    Plain byte counts: this is the hot path."""
    return b"\\" in payload or payload.count(b"{") != 1 or payload.count(b"[") >= MAX_DEPTH


def unknown_fields_storable(extra: dict[str, Any]) -> bool:
    """Whether the unknown fields pydantic parsed (of a payload :func:`needs_scan` passed)
    hold only numbers the journal keeps: pydantic reads ``NaN``, ``1e400`` and integers of any
    size into them."""
    return all(_storable(v) for v in extra.values())


def _storable(v: object) -> bool:
    if type(v) is int or type(v) is float:
        return -MAX_NUMBER <= v <= MAX_NUMBER  # False for NaN
    if type(v) is list:
        return all(_storable(x) for x in v)
    return True  # strings, booleans, null; objects do not pass needs_scan


def may_repeat_keys(payload: bytes, distinct: int) -> bool:
    """Whether a payload for which :func:`needs_scan` is false may hold more keys than the
    ``distinct`` ones the parser kept. Without backslashes no string holds a quote, so with the
    blanks taken out every key ends in ``":``, and only a string value that starts with blanks
    and a colon adds one more: a count equal to ``distinct`` proves the keys distinct."""
    return payload.translate(None, b" \t\n\r").count(b'":') != distinct


def _depth(text: str) -> int:
    depth = deepest = 0
    for c in _STRING.sub("", text):
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _lone_surrogate(v: object, where: str = "") -> str | None:
    """Where in ``v`` a string (key or value) holds a lone surrogate (a path of keys), if
    anywhere; the string itself is not told, it may be health data."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return where or "the payload"
        return None
    if isinstance(v, dict):
        for k, x in v.items():
            path = f"{where}.{k}" if where else k
            if _lone_surrogate(k) is not None:
                return f"a key in {where or 'the object'}"
            found = _lone_surrogate(x, path)
            if found is not None:
                return found
    elif isinstance(v, list):
        for i, x in enumerate(v):
            found = _lone_surrogate(x, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _parse(text: str) -> Any:
    """``text`` parsed strictly (any JSON value), or :class:`_Refused` saying why not."""
    if text.count("[") + text.count("{") > MAX_DEPTH:
        depth = _depth(text)
        if depth > MAX_DEPTH:
            raise _Refused("too_deep", f"nested {depth} deep, limit {MAX_DEPTH}")
    try:
        obj = _STRICT.decode(text)
    except RecursionError:  # not reached below MAX_DEPTH; a guard, never a crash
        raise _Refused("too_deep", f"nested past the parser's limit (limit {MAX_DEPTH})") from None
    except _Refused:
        raise
    except ValueError as e:  # json.JSONDecodeError
        raise _Refused("not_json", str(e)[:200]) from None
    if "\\u" in text:
        where = _lone_surrogate(obj)
        if where is not None:
            raise _Refused(
                "lone_surrogate", f"{where[:80]}: a lone UTF-16 surrogate (\\ud800-\\udfff)"
            )
    return obj


def refusal(text: str) -> tuple[Refusal, str] | None:
    """Why ``text`` (decoded UTF-8) is not a payload the journal can keep, or None."""
    try:
        obj = _parse(text)
    except _Refused as e:
        return e.reason, e.detail
    if not isinstance(obj, dict):
        return "not_object", f"payload is JSON but a {type(obj).__name__}, not an object"
    return None


UntrustedReason = Literal[Refusal, "too_large", "bad_utf8"]


class Untrusted(ValueError):
    """What :func:`parse_untrusted` refuses; ``reason`` is a dead-letter reason."""

    def __init__(self, reason: UntrustedReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: UntrustedReason = reason
        self.detail = detail


_BOM: Final = b"\xef\xbb\xbf"


def parse_untrusted(payload: bytes, *, limit: int | None = None) -> Any:
    """Bytes from outside (a vendor payload, a pushed body, an availability message) as a JSON
    value, held to the journal's rules: at most ``limit`` bytes, UTF-8 (a leading BOM is
    dropped), nested at most :data:`MAX_DEPTH`, no key twice, no number past ±2^53 - 1, no
    ``NaN``, no lone surrogate. Raises :class:`Untrusted` with the dead-letter reason; nothing
    else, whatever the bytes (deep nesting is refused before the parser recurses). The one
    parser for untrusted JSON outside :func:`ingest.payloads.decode`."""
    if limit is not None and len(payload) > limit:
        raise Untrusted("too_large", f"{len(payload)} bytes, limit {limit}")
    try:
        text = payload.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as e:
        raise Untrusted("bad_utf8", f"invalid UTF-8 at byte {e.start}") from None
    try:
        return _parse(text)
    except _Refused as e:
        raise Untrusted(e.reason, e.detail) from None

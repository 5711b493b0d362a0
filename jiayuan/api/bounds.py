"""Bounds on what a request may ask for, shared by every route: integers the stores can hold
(SQLite's INTEGER is 64-bit signed), times as RFC 3339 text within the calendar the stores can
represent, and the live stream's ``Last-Event-ID``.

Past a bound the answer is a 422 naming the parameter (FastAPI's shape), or, for times before
any data or after any data can exist, a clamp — never a 500."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import AfterValidator, AwareDatetime, BeforeValidator

I64_MAX: Final = 2**63 - 1
"""The largest id, offset or count the stores hold."""
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9999, 12, 30, tzinfo=UTC)
"""Times are clamped to [EARLIEST, LATEST]: nothing is stored before the epoch, and a day's
margin below year 10000 keeps every offset and local-time sum representable."""
RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?)?"
)
TIME_HINT: Final = "an RFC 3339 time with an offset, e.g. 2026-01-31T08:00:00+08:00 or …Z"


def _rfc3339_text(v: Any) -> Any:
    if isinstance(v, datetime):
        return v
    if not isinstance(v, str) or not RFC3339.fullmatch(v):
        raise ValueError(f"expected {TIME_HINT}")
    return v


def clamp_time(v: datetime) -> datetime:
    return min(max(v, EARLIEST), LATEST)


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(clamp_time)]
"""An aware time given as RFC 3339 text (not a bare number, which pydantic would read as
epoch seconds), clamped to [EARLIEST, LATEST]. For query parameters and request bodies."""


def event_id(value: str | None, where: tuple[str, ...] = ("header", "last-event-id")) -> int | None:
    """A stream position the server gave (``id:`` of an event): a non-negative 64-bit integer
    in ASCII digits; absent or empty: none."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > I64_MAX:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": where,
                    "msg": f"not an event id of this stream (digits, at most {I64_MAX})",
                    "input": value[:40],
                }
            ]
        )
    return int(text)


def plain_number(v: object) -> bool:
    """A stored value a response can carry as a number: a bool, a 64-bit integer or a finite
    float (a 400-digit ``steps`` or ``1e400`` in an old payload is not one)."""
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        return -I64_MAX <= v <= I64_MAX
    return isinstance(v, float) and math.isfinite(v)


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take (a misspelt filter would otherwise be
    ignored and answer everything), naming it and the ones the route takes. For ``/api/``."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.url.path.startswith("/api/"):
        return
    names = _QUERY_NAMES.get(id(route))
    if names is None:
        names = _QUERY_NAMES[id(route)] = frozenset(_query_names(route.dependant))
    unknown = [k for k in request.query_params if k not in names]
    if unknown:
        takes = ", ".join(sorted(names)) or "none"
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", unknown[0][:64]),
                    "msg": f"unknown query parameter (this takes: {takes})",
                    "input": request.query_params[unknown[0]][:64],
                }
            ]
        )


def _query_names(d: Dependant) -> set[str]:
    names = {p.alias for p in d.query_params}
    for sub in d.dependencies:
        names |= _query_names(sub)
    return names

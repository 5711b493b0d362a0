"""msgspec mirrors of the payload models, for the hot path of :func:`ingest.payloads.decode`.

The pydantic models in :mod:`ingest.payloads` stay the one statement of what a payload holds
(the API, the rule schema and the journal's columns read them); :func:`mirror` derives from a
model a :class:`msgspec.Struct` with the same fields in the same order, the same types (strict:
no bool for a number, no float for an integer) and the same bounds, so that nothing is written
twice. A field the payload left out is :data:`msgspec.UNSET` (``null`` stays ``None``): the
decoder counts the fields present to prove a payload's keys distinct.

Two things the mirror does not take from msgspec: the device time stays text, read by
:func:`aware_time` in the one RFC 3339 form both parsers read alike, and unknown fields are
skipped by the Struct (the decoder reads them separately when there are any).
"""

from __future__ import annotations

import re
import types
import typing
from datetime import datetime
from typing import Annotated, Any, Final, Literal, Union

import annotated_types
import msgspec
from msgspec import UNSET, Meta, UnsetType
from pydantic import AwareDatetime, BaseModel

TIME_FIELD: Final = "ts"
"""The device time: RFC 3339 text with an offset, or epoch milliseconds."""

_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


def aware_time(text: str) -> datetime | None:
    """``text`` as a time with its offset, when it is in the common RFC 3339 form
    (``2026-11-27T10:00:00.123+08:00``, ``...Z``): None for anything else (another form, a
    date that does not exist), which the decoder then leaves to pydantic."""
    if not _RFC3339.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _meta(metadata: list[Any]) -> Meta | None:
    bounds: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            bounds["ge"] = m.ge
        elif isinstance(m, annotated_types.Le):
            bounds["le"] = m.le
        elif isinstance(m, annotated_types.MaxLen):
            bounds["max_length"] = m.max_length
        else:  # a constraint the mirror does not know: fail at import, never decode wrongly
            raise TypeError(f"no msgspec mirror for the constraint {m!r}")
    return Meta(**bounds) if bounds else None


def _wire_type(annotation: Any, metadata: list[Any]) -> Any:
    """The msgspec type of one model field; ``None`` stays allowed where the model allows it."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = typing.get_args(annotation)
    else:
        members = (annotation,)
    out: list[Any] = []
    for t in members:
        if t is type(None):
            out.append(None)
        elif t is AwareDatetime:
            out.append(str)  # read by aware_time()
        elif typing.get_origin(t) is Annotated:
            base, *inner = typing.get_args(t)
            out.append(_wire_type(base, [m for f in inner for m in getattr(f, "metadata", [f])]))
        elif t in (int, float, str, bool) or typing.get_origin(t) is Literal:
            meta = _meta(metadata)
            out.append(t if meta is None else Annotated[t, meta])
        else:
            raise TypeError(f"no msgspec mirror for the type {t!r}")
    wire: Any = out[0]
    for t in out[1:]:
        wire = Union[wire, t]  # noqa: UP007  (members built at run time)
    return wire


def mirror(model: type[BaseModel]) -> type[msgspec.Struct]:
    """A Struct with ``model``'s fields, bounds and order; optional fields default to UNSET."""
    fields: list[tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        wire = _wire_type(info.annotation, list(info.metadata))
        if info.is_required():
            fields.append((name, wire, msgspec.NODEFAULT))
        elif info.default is None:
            fields.append((name, Union[wire, UnsetType], UNSET))  # noqa: UP007
        else:
            raise TypeError(f"{model.__name__}.{name}: only None defaults are mirrored")
    return msgspec.defstruct(
        f"{model.__name__}Wire", fields, kw_only=True, gc=False, forbid_unknown_fields=False
    )

"""Payload models per kind and stream, and :func:`decode`, which turns one MQTT message into a
typed :class:`Reading` or a :class:`DeadLetter` with its reason.

This is the edge: nothing downstream sees raw bytes or paho's message type.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ingest.strictjson import (
    MAX_DEPTH,
    MAX_NUMBER,
    may_repeat_keys,
    needs_scan,
    refusal,
    unknown_fields_storable,
)
from ingest.topics import Kind, Stream, Topic, TopicError, parse_topic
from ingest.wiretypes import aware_time, mirror

__all__ = ["MAX_DEPTH", "MAX_NUMBER"]  # re-exported: the limits a payload is held to

log = logging.getLogger(__name__)

MAX_PAYLOAD: Final = 4096
MAX_AGE_S: Final = 24 * 3600.0
"""A device ``ts`` up to this old is evaluated at its own time."""
MAX_FUTURE_S: Final = 120.0
"""A device ``ts`` further ahead than this is not believed."""

DecodeReason = Literal[
    "too_large",
    "bad_utf8",
    "not_json",
    "not_object",
    "unknown_topic",
    "unknown_community",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "bad_value",
    "too_deep",
    "too_large_number",
    "duplicate_key",
    "lone_surrogate",
]
"""Why :func:`decode` refused a message."""
DeadLetterReason = Literal[DecodeReason, "journal_refused"]
"""Why a message is a dead letter: a decode reason, or ``journal_refused`` when the journal
would not store a message that decoded (it is then kept as a dead letter, never retried)."""
DECODE_REASONS: Final[tuple[str, ...]] = get_args(DecodeReason)
REASONS: Final[tuple[str, ...]] = get_args(DeadLetterReason)
"""Every reason a dead letter can carry, read from the Literal itself: the ops page labels each
(tests/unit/test_console_titles.py holds the console's words to this list)."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)

    ts: AwareDatetime | Annotated[int, Field(ge=-MAX_NUMBER, le=MAX_NUMBER)] | None = None
    seq: int | None = Field(default=None, ge=0, le=MAX_NUMBER)


class WearableTelemetry(_Payload):
    heart_rate: float | None = Field(default=None, ge=20, le=250)
    spo2: float | None = Field(default=None, ge=50, le=100)
    skin_temp_c: float | None = Field(default=None, ge=30, le=45)
    steps: int | None = Field(default=None, ge=0, le=MAX_NUMBER)
    battery: float | None = Field(default=None, ge=0, le=100)
    worn: bool | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class WearableEvent(_Payload):
    event: Literal["fall", "fall_cancelled", "sos", "removed", "worn", "low_battery"]


class SmokeTelemetry(_Payload):
    obscuration_pct_m: float | None = Field(default=None, ge=0, le=100)
    temperature_c: float | None = Field(default=None, ge=-40, le=150)
    co_ppm: float | None = Field(default=None, ge=0, le=MAX_NUMBER)
    battery: float | None = Field(default=None, ge=0, le=100)


class SmokeEvent(_Payload):
    event: Literal["alarm", "alarm_clear", "fault", "fault_clear", "tamper", "test", "low_battery"]


class GateEvent(_Payload):
    event: Literal["granted", "denied", "forced", "held_open", "closed", "tamper"]
    direction: Literal["in", "out"] | None = None
    method: Literal["card", "face", "qr", "pin"] | None = None
    credential: str | None = Field(default=None, max_length=128)


class GateTelemetry(_Payload):
    """Gates send no defined measurements; a telemetry message still proves they are alive."""


class Status(_Payload):
    state: Literal["online", "offline"]
    fw: str | None = Field(default=None, max_length=64)


MODELS: Final[dict[tuple[str, str], type[_Payload]]] = {
    ("wearable", "telemetry"): WearableTelemetry,
    ("wearable", "event"): WearableEvent,
    ("smoke", "telemetry"): SmokeTelemetry,
    ("smoke", "event"): SmokeEvent,
    ("gate", "telemetry"): GateTelemetry,
    ("gate", "event"): GateEvent,
    ("gate", "status"): Status,
    ("smoke", "status"): Status,
    ("wearable", "status"): Status,
}
_SKIP: Final = frozenset({"ts", "seq"})
_NAME: Final = frozenset({"event", "state"})
_TEXT: Final = frozenset({"fw", "direction", "method", "credential"})

TsFlag = Literal["future", "too_old"]


class Reading(msgspec.Struct, frozen=True, gc=False):
    """One accepted message. Times are epoch seconds, UTC.

    A frozen msgspec Struct rather than a dataclass: built for every message, in a tenth of
    the time (0.2 µs against 1.6). ``gc=False``: nothing it holds can lead back to it, and the
    collector then never walks the batches of readings held through the journal write (the
    pipeline's own work per message 3.3 -> 2.7 µs, ``python -m bench.pipeline``)."""

    community: str
    kind: Kind
    device_id: str
    stream: Stream
    ts: float
    """Event time: the device's ``ts`` when believable, else the receive time."""
    received: float
    seq: int | None
    values: dict[str, float | bool]
    """Known measurements of a telemetry message (numbers and booleans), by field name."""
    event: str | None = None
    """The event name of an ``event`` message, or the state of a ``status`` message."""
    attrs: dict[str, str] = msgspec.field(default_factory=dict)
    """Known text fields: ``direction``, ``method``, ``credential``, ``fw``."""
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    """Unknown fields, kept but not interpreted."""
    ts_flag: TsFlag | None = None
    """Set when the device's ``ts`` was not believed and the receive time was used."""
    payload: bytes = b""
    key: str | None = None
    """The source's own id for this message (an HTTP platform's message id, see
    :mod:`ingest.push`): when set, the journal's duplicate key, so a retried push is journaled
    once (:func:`ingest.journal.dedup_key`). Not stored in its own column."""

    @property
    def lag(self) -> float:
        """How long after its event time the reading arrived, in seconds."""
        return self.received - self.ts


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: DeadLetterReason
    detail: str
    received: float


def _reason(err: ValidationError) -> tuple[DecodeReason, str]:
    first = err.errors(include_url=False)[0]
    kind = first["type"]
    loc = ".".join(str(p) for p in first["loc"])
    where = f"{loc}: {first['msg']}" if loc else first["msg"]
    if kind == "missing":
        return "missing_field", where
    value = first.get("input")
    if type(value) in (int, float) and not -MAX_NUMBER <= value <= MAX_NUMBER:
        return "too_large_number", where  # NaN compares false too: refusal() tells it apart
    if kind in (
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "too_long",
        "string_too_long",
        "finite_number",
    ):
        return "out_of_range", where
    if kind in ("literal_error", "enum"):
        return "bad_value", where
    if kind == "json_invalid":
        return "not_json", where
    if kind == "model_type":
        return "not_object", where
    return "wrong_type", where


def _event_time(ts: datetime | int | None, received: float) -> tuple[float, TsFlag | None]:
    if ts is None:
        return received, None
    try:
        t = ts.timestamp() if isinstance(ts, datetime) else ts / 1000.0
    except (OverflowError, ValueError, OSError):  # a date at the calendar's ends
        return received, "future" if isinstance(ts, datetime) and ts.year > 2000 else "too_old"
    if t > received + MAX_FUTURE_S:
        return received, "future"
    if t < received - MAX_AGE_S:
        return received, "too_old"
    return t, None


_BOM: Final = b"\xef\xbb\xbf"


def _printable(text: str) -> str:
    """``text`` as the journal can store it: a topic may hold lone surrogates."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def decode_reference(
    topic: str, payload: bytes, received: float, communities: Collection[str] | None = None
) -> Reading | DeadLetter:
    """Decode one message with the pydantic models: what :func:`decode` answers, slower. Never
    raises: anything wrong becomes a :class:`DeadLetter` whose reason says what (see
    :data:`DecodeReason`). ``communities``: the installation's, when it declares several (a
    topic of another community is ``unknown_community``); None takes any community.

    A UTF-8 byte order mark before the object is tolerated (RFC 8259 §8.1) and not stored."""
    try:
        out = _decode(topic, payload, received, communities)
    except Exception as e:  # a guard: every known case is handled below; never a crash
        log.exception("decode failed on a message on %.120s; kept as a dead letter", topic)
        out = ("not_json", f"undecodable: {type(e).__name__}")
    if isinstance(out, Reading):
        return out
    return DeadLetter(_printable(topic), payload[:MAX_PAYLOAD], out[0], out[1], received)


def _decode(
    topic: str, payload: bytes, received: float, communities: Collection[str] | None
) -> Reading | tuple[DecodeReason, str]:
    try:
        t = parse_topic(topic)
    except TopicError as e:
        return "unknown_topic", _printable(str(e))  # the only TopicError reason
    if communities is not None and t.community not in communities:
        return "unknown_community", f"community {t.community!r} is not one of this installation's"
    if len(payload) > MAX_PAYLOAD:
        return "too_large", f"{len(payload)} bytes, limit {MAX_PAYLOAD}"
    body = payload[3:] if payload.startswith(_BOM) else payload
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return "bad_utf8", f"invalid UTF-8 at byte {e.start + len(payload) - len(body)}"
    scan = needs_scan(body)
    if scan:  # the strict parser first: its reasons are the truer ones
        why = refusal(text)
        if why is not None:
            return why
    model = MODELS[(t.kind, t.stream)]
    try:
        msg = model.model_validate_json(body)
    except ValidationError as e:
        reason, detail = _reason(e)
        if reason in ("not_json", "not_object", "too_large_number") and not scan:
            why = refusal(text)  # what exactly is wrong with it
            if why is not None:
                return why
        return reason, detail
    extra = msg.__pydantic_extra__ or {}
    if not scan and (
        (extra and not unknown_fields_storable(extra))
        or may_repeat_keys(body, len(msg.model_fields_set))
    ):
        why = refusal(text)
        if why is not None:
            return why
    ts, flag = _event_time(msg.ts, received)
    values: dict[str, float | bool] = {}
    attrs: dict[str, str] = {}
    event: str | None = None
    for name, v in msg.__dict__.items():  # declared fields only; extras live elsewhere
        if v is None or name in _SKIP:
            continue
        if name in _TEXT:
            attrs[name] = v
        elif name in _NAME:
            event = v
        else:
            values[name] = v
    return Reading(
        community=t.community,
        kind=t.kind,
        device_id=t.device_id,
        stream=t.stream,
        ts=ts,
        received=received,
        seq=msg.seq,
        values=values,
        event=event,
        attrs=attrs,
        extra=extra,
        ts_flag=flag,
        payload=body,
    )


# The hot path: msgspec reads the payloads nearly every device sends (one flat object, no
# escapes, distinct keys, the usual time form) into the models' mirrors; everything else
# (every dead letter too) goes to decode_reference, so that both answer alike by construction
# where the fast one declines, and by tests/unit/test_decode_equivalence.py where it answers.


@dataclass(frozen=True, slots=True)
class _Wire:
    """How one model is read on the fast path: its Struct's decoder, and what its fields after
    ``ts`` and ``seq`` are — all measurements (telemetry), or the event name (or the state)
    followed by text fields."""

    decoder: msgspec.json.Decoder[Any]
    known: frozenset[str]
    names: tuple[str, ...]
    named: bool


def _wire(model: type[_Payload]) -> _Wire:
    first, second, *names = model.model_fields
    named = bool(names) and names[0] in _NAME
    layout_ok = (first, second) == ("ts", "seq") and (
        all(n in _TEXT for n in names[1:])
        if named
        else not any(n in _NAME or n in _TEXT or n in _SKIP for n in names)
    )
    if not layout_ok:  # a model this fast path does not know how to read: fail at import
        raise TypeError(f"{model.__name__}: fields {list(model.model_fields)} not mirrored")
    decoder = msgspec.json.Decoder(mirror(model))
    return _Wire(decoder, frozenset(model.model_fields), tuple(names), named)


_WIRES: Final = {shape: _wire(model) for shape, model in MODELS.items()}


@lru_cache(maxsize=65_536)
def _route(topic: str) -> tuple[Topic, _Wire]:
    """A topic's parts and how its payloads are read (cached as :func:`parse_topic` is: a
    fleet uses a few topics per device; a :class:`TopicError` is raised, never cached)."""
    t = parse_topic(topic)
    return t, _WIRES[(t.kind, t.stream)]


_ANY: Final = msgspec.json.Decoder(dict[str, Any])
_BLANKS: Final = b" \t\n\r"
_BACKSLASH: Final = ord("\\")
"""An int: ``92 in body`` is a memchr, five times faster than ``b"\\\\" in body``."""
_to_builtins: Final = msgspec.to_builtins
"""A decoded Struct as a dict of the fields the payload held: msgspec leaves the UNSET ones
out, in C. 0.3 µs a message against 0.9 for the tuple of all fields filtered in Python
(``python -m bench.decode``, step ``fields``)."""


def decode(
    topic: str, payload: bytes, received: float, communities: Collection[str] | None = None
) -> Reading | DeadLetter:
    """Decode one message. Never raises: anything wrong becomes a :class:`DeadLetter` whose
    reason says what (see :data:`DecodeReason`). The same answer as :func:`decode_reference`,
    in a fraction of the time for a valid payload. ``communities`` as there.

    A UTF-8 byte order mark before the object is tolerated (RFC 8259 §8.1) and not stored."""
    try:
        out = _fast(topic, payload, received, communities)
    except Exception:  # a guard: the reference decoder answers
        log.exception("fast decode failed on a message on %.120s", _printable(topic))
        out = None
    return decode_reference(topic, payload, received, communities) if out is None else out


def _fast(
    topic: str, payload: bytes, received: float, communities: Collection[str] | None = None
) -> Reading | None:
    """The reading of a payload in the common shape, or None: not that shape, or not valid."""
    try:
        t, wire = _route(topic)
    except TopicError:
        return None
    if communities is not None and t.community not in communities:
        return None
    if len(payload) > MAX_PAYLOAD:
        return None
    body = payload
    if not body.isascii():  # a BOM, or text beyond ASCII: valid UTF-8?
        body = payload[3:] if payload.startswith(_BOM) else payload
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if _BACKSLASH in body:  # an escape: perhaps a lone surrogate, or a key written twice two ways
        return None
    try:
        msg = wire.decoder.decode(body)
    except msgspec.DecodeError:  # malformed, or a field the model refuses (ValidationError)
        return None
    sent = _to_builtins(msg)  # the fields sent (null ones too), in the model's order
    present = len(sent)
    raw: Any = sent.pop("ts", None)
    seq = sent.pop("seq", None)
    if None in sent.values():  # a field sent as null is as good as absent (nearly never)
        sent = {n: v for n, v in sent.items() if v is not None}
    values: dict[str, float | bool] = {}
    attrs: dict[str, str] = {}
    event: str | None = None
    if wire.named:  # the name is required: never absent, never null
        event = sent.pop(wire.names[0])
        attrs = sent
    else:
        values = sent
    keys = body.translate(None, _BLANKS).count(b'":')  # see strictjson.may_repeat_keys
    extra: dict[str, Any] = {}
    if keys != present:  # unknown fields, or a key twice: read them all
        try:
            whole = _ANY.decode(body)
        except msgspec.DecodeError:
            return None
        if len(whole) != keys or needs_scan(body):  # a key twice, nesting: the reference
            return None
        extra = {k: v for k, v in whole.items() if k not in wire.known}
        if not unknown_fields_storable(extra):
            return None
    when: datetime | int | None = raw
    if type(raw) is int and received - MAX_AGE_S <= raw / 1000.0 <= received + MAX_FUTURE_S:
        ts, flag = raw / 1000.0, None  # epoch ms, believable: what _event_time answers
    else:
        if type(raw) is str:
            when = aware_time(raw)
            if when is None:  # another form of time, or none at all: decode_reference reads it
                return None
        ts, flag = _event_time(when, received)
    return Reading(
        community=t.community,
        kind=t.kind,
        device_id=t.device_id,
        stream=t.stream,
        ts=ts,
        received=received,
        seq=seq,
        values=values,
        event=event,
        attrs=attrs,
        extra=extra,
        ts_flag=flag,
        payload=body,
    )

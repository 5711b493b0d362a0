"""Payload models per kind and stream, and :func:`decode`, which turns one MQTT message into a
typed :class:`Reading` or a :class:`DeadLetter` with its reason.

This is the edge: nothing downstream sees raw bytes or paho's message type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ingest.topics import Kind, Stream, TopicError, parse_topic

MAX_PAYLOAD: Final = 4096
MAX_AGE_S: Final = 24 * 3600.0
"""A device ``ts`` up to this old is evaluated at its own time."""
MAX_FUTURE_S: Final = 120.0
"""A device ``ts`` further ahead than this is not believed."""

DeadLetterReason = Literal[
    "too_large",
    "bad_utf8",
    "not_json",
    "not_object",
    "unknown_topic",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "bad_value",
]
REASONS: Final[tuple[str, ...]] = DeadLetterReason.__args__  # type: ignore[attr-defined]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)

    ts: AwareDatetime | int | None = None
    seq: int | None = Field(default=None, ge=0)


class WearableTelemetry(_Payload):
    heart_rate: float | None = Field(default=None, ge=20, le=250)
    spo2: float | None = Field(default=None, ge=50, le=100)
    skin_temp_c: float | None = Field(default=None, ge=30, le=45)
    steps: int | None = Field(default=None, ge=0)
    battery: float | None = Field(default=None, ge=0, le=100)
    worn: bool | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class WearableEvent(_Payload):
    event: Literal["fall", "fall_cancelled", "sos", "removed", "worn", "low_battery"]


class SmokeTelemetry(_Payload):
    obscuration_pct_m: float | None = Field(default=None, ge=0, le=100)
    temperature_c: float | None = Field(default=None, ge=-40, le=150)
    co_ppm: float | None = Field(default=None, ge=0)
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


@dataclass(frozen=True, slots=True)
class Reading:
    """One accepted message. Times are epoch seconds, UTC."""

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
    attrs: dict[str, str] = field(default_factory=dict)
    """Known text fields: ``direction``, ``method``, ``credential``, ``fw``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Unknown fields, kept but not interpreted."""
    ts_flag: TsFlag | None = None
    """Set when the device's ``ts`` was not believed and the receive time was used."""
    payload: bytes = b""

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


def _reason(err: ValidationError) -> tuple[DeadLetterReason, str]:
    first = err.errors(include_url=False)[0]
    kind = first["type"]
    loc = ".".join(str(p) for p in first["loc"])
    where = f"{loc}: {first['msg']}" if loc else first["msg"]
    if kind == "missing":
        return "missing_field", where
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
    t = ts.timestamp() if isinstance(ts, datetime) else ts / 1000.0
    if t > received + MAX_FUTURE_S:
        return received, "future"
    if t < received - MAX_AGE_S:
        return received, "too_old"
    return t, None


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def _has_non_json_number(payload: bytes) -> bool:
    try:
        json.loads(payload, parse_constant=_reject_constant)
    except ValueError:
        return True
    return False


def decode(topic: str, payload: bytes, received: float) -> Reading | DeadLetter:
    """Decode one message. Never raises: anything wrong becomes a :class:`DeadLetter`."""

    def dead(reason: DeadLetterReason, detail: str) -> DeadLetter:
        return DeadLetter(topic, payload[:MAX_PAYLOAD], reason, detail, received)

    try:
        t = parse_topic(topic)
    except TopicError as e:
        return dead("unknown_topic", str(e))  # the only TopicError reason
    if len(payload) > MAX_PAYLOAD:
        return dead("too_large", f"{len(payload)} bytes, limit {MAX_PAYLOAD}")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as e:
        return dead("bad_utf8", f"invalid UTF-8 at byte {e.start}")
    model = MODELS[(t.kind, t.stream)]
    try:
        msg = model.model_validate_json(payload)
    except ValidationError as e:
        reason, detail = _reason(e)
        if reason == "not_json":
            # pydantic reports a JSON array or number as a model_type error, bad syntax as
            # json_invalid; tell them apart so operators see which devices send garbage.
            try:
                json.loads(payload)
            except ValueError:
                return dead("not_json", detail)
            return dead("not_object", "payload is JSON but not an object")
        return dead(reason, detail)
    if (b"NaN" in payload or b"Infinity" in payload) and _has_non_json_number(payload):
        # pydantic's parser takes NaN and Infinity, which JSON does not have; in an unknown
        # field they would reach the journal and break every JSON query over it.
        return dead("not_json", "NaN or Infinity is not a JSON number")
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
        extra=msg.__pydantic_extra__ or {},
        ts_flag=flag,
        payload=payload,
    )

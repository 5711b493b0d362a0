"""The profiles an integration may name for its pushes: ``native`` (here) and every device profile
with an ``http`` section (ingest/profiles.py), each with ``from_http(body) -> list[Canonical]``.

``native`` takes bodies that already carry jiayuan's own topics and payloads: one message or a
list of at most :data:`MAX_MESSAGES`::

    {"message_id": "ctw-8812", "topic": "community/y/wearable/w-1/event",
     "payload": {"event": "fall", "ts": "2026-12-03T18:00:00+08:00"}}

``message_id`` is the platform's own id for the message (1–128 printable characters): a push
retried with the same id is journaled once. ``payload`` is the JSON object a device would
publish on ``topic``; it is then decoded and validated exactly as an MQTT payload is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Final, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ingest.payloads import DecodeReason
from ingest.profiles import Canonical, ProfileError, Profiles
from ingest.strictjson import Untrusted, parse_untrusted

MAX_MESSAGES: Final = 100


MessageId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[!-~]+$")]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    message_id: MessageId
    topic: str = Field(max_length=256)
    payload: dict[str, Any]


def _reason(e: ValidationError, where: str) -> ProfileError:
    first = e.errors(include_url=False)[0]
    kind = first["type"]
    loc = ".".join(str(p) for p in (where, *first["loc"]) if p != "")
    detail = f"{loc}: {first['msg']}" if loc else first["msg"]
    reason: DecodeReason = "wrong_type"
    if kind == "missing":
        reason = "missing_field"
    elif kind in ("string_too_long", "string_too_short", "too_long", "too_short"):
        reason = "out_of_range"
    elif kind in ("string_pattern_mismatch", "extra_forbidden"):
        reason = "bad_value"
    elif kind == "model_type":
        reason = "not_object"
    return ProfileError(reason, detail[:300])


class NativeProfile:
    id = "native"
    max_body: int | None = None
    """No bound of its own: ``JIAYUAN_PUSH_MAX_BODY_BYTES`` (the API's) bounds its bodies."""

    def from_http(self, body: bytes) -> list[Canonical]:
        """The messages of one pushed body; raises :class:`ProfileError` for a body that is not
        one message or a list of them."""
        try:  # the one parser for untrusted JSON: keys twice, deep, big numbers... refused
            parsed = parse_untrusted(body)
        except Untrusted as e:
            raise ProfileError(e.reason, e.detail) from None
        if isinstance(parsed, dict):
            items, where = [parsed], [""]
        elif isinstance(parsed, list):
            if not 1 <= len(parsed) <= MAX_MESSAGES:
                raise ProfileError(
                    "out_of_range", f"{len(parsed)} messages: 1 to {MAX_MESSAGES} per push"
                )
            items, where = parsed, [str(i) for i in range(len(parsed))]
        else:
            raise ProfileError("not_object", "a message object or a list of them expected")
        out: list[Canonical] = []
        for item, w in zip(items, where, strict=True):
            try:
                m = _Message.model_validate(item)
            except ValidationError as e:
                raise _reason(e, w) from None
            payload = json.dumps(m.payload, ensure_ascii=False, separators=(",", ":"))
            out.append(Canonical(m.topic, payload.encode(), m.message_id))
        return out


class HttpProfile(Protocol):
    """What maps a pushed body: ``native``, or a device profile with an ``http`` section."""

    @property
    def id(self) -> str: ...

    @property
    def max_body(self) -> int | None:
        """A body longer than this is refused (413), whatever the API's bound; None: none."""

    def from_http(self, body: bytes) -> list[Canonical]: ...


NATIVE: Final = NativeProfile()


def push_profiles(profiles: Profiles) -> Mapping[str, HttpProfile]:
    """The profiles an integration may name, by id: ``native`` and the device profiles that
    take HTTP pushes."""
    out: dict[str, HttpProfile] = {NATIVE.id: NATIVE}
    out.update((p.id, p) for p in profiles if p.spec.http is not None)
    return out

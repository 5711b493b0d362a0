"""The topic tree: ``community/<community_id>/<kind>/<device_id>/<stream>``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

Kind = Literal["gate", "smoke", "wearable"]
Stream = Literal["telemetry", "event", "status"]
KINDS: tuple[Kind, ...] = get_args(Kind)
STREAMS: tuple[Stream, ...] = get_args(Stream)

SUBSCRIPTION = "community/+/+/+/+"
"""Every reading topic: what the service's account may read (and what the one session of
earlier versions subscribed to)."""
URGENT_STREAMS: tuple[Stream, ...] = ("event", "status")
"""Streams that never wait behind telemetry: they have a session of their own (events are
falls, SOS, alarms; status rides with them so that a device's events and its online/offline
changes keep their order)."""
TELEMETRY_SUBSCRIPTIONS: tuple[str, ...] = ("community/+/+/+/telemetry",)
URGENT_SUBSCRIPTIONS: tuple[str, ...] = tuple(f"community/+/+/+/{s}" for s in URGENT_STREAMS)
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Topic:
    community: str
    kind: Kind
    device_id: str
    stream: Stream


class TopicError(ValueError):
    """The topic is not a reading topic; ``reason`` is the dead-letter reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@lru_cache(maxsize=65_536)
def parse_topic(topic: str) -> Topic:
    """Split a topic into its parts, or raise :class:`TopicError` saying why it is not one.

    Cached: a fleet uses a few topics per device, over and over (errors are not cached)."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "community":
        raise TopicError("unknown_topic", f"not community/<id>/<kind>/<device>/<stream>: {topic!r}")
    _, community, kind, device_id, stream = parts
    if not _ID.fullmatch(community):
        raise TopicError("unknown_topic", f"bad community id in {topic!r}")
    if kind not in KINDS:
        raise TopicError("unknown_topic", f"unknown device kind {kind!r}")
    if not _ID.fullmatch(device_id):
        raise TopicError("unknown_topic", f"bad device id in {topic!r}")
    if stream not in STREAMS:
        raise TopicError("unknown_topic", f"unknown stream {stream!r}")
    return Topic(community, kind, device_id, stream)  # type: ignore[arg-type,unused-ignore]


def topic_for(community: str, kind: str, device_id: str, stream: str) -> str:
    return f"community/{community}/{kind}/{device_id}/{stream}"

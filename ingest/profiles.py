"""Device profiles at work: one vendor message in, the canonical messages a native device would
have sent out (README, "Device profiles"; the file schema is :mod:`ingest.profile_model`).

A :class:`Profile` turns one vendor message into zero or more :class:`Canonical` messages — a
topic of the native tree and a canonical JSON object — which then go through
:func:`ingest.payloads.decode` exactly as a native device's do: the same validation, dead-letter
reasons, journal and PUBACK after commit. Whatever is wrong with the vendor message itself
raises :class:`ProfileError`, whose ``reason`` is one of the contract's dead-letter reasons;
nothing else is raised, whatever the bytes.

Events with ``trigger: change`` (a state repeated in every report, like Zigbee2MQTT's
``smoke``) are made when the value differs from the device's last one seen since the start.
Over MQTT only: an HTTP push must translate the same way when the platform retries it (its
message id then makes the retry a duplicate), so :meth:`Profile.from_http` makes every mapped
event. After a restart the first report counts as a change: an alarm still on is raised again
(an open alert is only updated), a clear that happened meanwhile is seen.

The canonical topic names the device's own community when the registry knows it (an
installation of several communities, :meth:`Profiles.place_by`), else the profile's (the
installation's first): a bridge may carry devices of every community.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from ingest.message_keys import MAX_MESSAGE_ID, message_id_problem, message_key
from ingest.payloads import DecodeReason
from ingest.profile_model import (
    PLACEHOLDER,
    EventSpec,
    ProfileSpec,
    read_profile_files,
    shipped_profile_files,
    telemetry_fields,
    value_key,
)
from ingest.strictjson import Untrusted, parse_untrusted
from ingest.topics import topic_for

log = logging.getLogger(__name__)

MAX_VENDOR_PAYLOAD: Final = 65_536
"""A vendor message larger than this is refused (``too_large``); a dead letter keeps 4 KiB."""
MAX_STATUS_PAYLOAD: Final = 4096
"""An availability message larger than this is refused (``too_large``)."""
MAX_REMEMBERED: Final = 200_000
"""Last values kept for ``trigger: change`` (device × field); past it, the oldest are forgotten
(forgetting one only means its next report counts as a change)."""


@dataclass(frozen=True, slots=True)
class Canonical:
    topic: str
    """``community/<c>/<kind>/<device_id>/<stream>``, as native devices publish."""
    payload: bytes
    """A canonical JSON object, as a native device would send it."""
    key: str | None = None
    """The source's own message id when it has one (an HTTP platform's message id, with the
    message's time when the profile reads one: :func:`~ingest.message_keys.message_key`),
    the same for every part of one source message: the journal's duplicate key for this
    reading (qualified by the integration and the part, ``jiayuan/api/push.py``), so a
    retried push is journaled once."""
    refused: tuple[DecodeReason, str] | None = None
    """This part of the vendor message could not be translated (an event field of the wrong
    type): it is this dead letter, and the message's other parts still go through."""
    edge: tuple[str, int] | None = None
    """For an event made by a ``trigger: change``: the (device, event) whose new value it
    recorded. Should the event not be journaled, :meth:`Profile.forget` it, so that the
    device's next report makes it again."""


class ProfileError(ValueError):
    """The vendor message cannot be translated; ``reason`` is its dead-letter reason."""

    def __init__(self, reason: DecodeReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: DecodeReason = reason
        self.message = message


class ProfileFileError(ValueError):
    """Profile files are invalid; ``errors`` holds one line per problem, each naming the file,
    the profile and the field."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


_MISSING: Final = object()


def _get(obj: dict[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _object(payload: bytes) -> dict[str, Any]:
    """The vendor's JSON object, or :class:`ProfileError` saying why it is not one."""
    obj = _json(payload, MAX_VENDOR_PAYLOAD)
    if not isinstance(obj, dict):
        raise ProfileError("not_object", f"JSON but a {type(obj).__name__}, not an object")
    return obj


def _json(payload: bytes, limit: int) -> Any:
    """:func:`~ingest.strictjson.parse_untrusted` (the journal's own checks: size, UTF-8,
    depth, big numbers, keys twice, NaN, lone surrogates), its refusal a :class:`ProfileError`."""
    try:
        return parse_untrusted(payload, limit=limit)
    except Untrusted as e:
        raise ProfileError(e.reason, e.detail) from None


def _when(value: Any, form: str) -> int:
    """A vendor time as epoch milliseconds (the canonical form)."""
    if isinstance(value, str) and form in ("auto", "rfc3339"):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise ProfileError("bad_value", f"time {value[:40]!r} is not RFC 3339") from None
        if t.tzinfo is None:
            raise ProfileError("bad_value", f"time {value[:40]!r} has no UTC offset")
        try:
            return round(t.timestamp() * 1000)
        except (OverflowError, ValueError, OSError):
            raise ProfileError("out_of_range", f"time {value[:40]!r}") from None
    if isinstance(value, int | float) and not isinstance(value, bool) and form != "rfc3339":
        ms = value * 1000 if form == "epoch_s" else value
        if not math.isfinite(ms) or abs(ms) > 2**53 - 1:
            raise ProfileError("out_of_range", f"time {value!r}")
        return round(ms)
    raise ProfileError("wrong_type", f"time is {type(value).__name__}, expected {form}")


class Profile:
    """One loaded profile of ``community``."""

    def __init__(self, spec: ProfileSpec, community: str) -> None:
        self.spec = spec
        self.id = spec.id
        self.kind = spec.kind
        self.community = community
        self.community_of: Callable[[str], str | None] = _nowhere
        """The community a registered device id belongs to (:meth:`Profiles.place_by`); None
        for an unregistered one, which is placed in ``community``."""
        self._types = telemetry_fields(spec.kind)
        self._events = [(e, e.events()) for e in spec.events]
        self._last: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()
        m = spec.mqtt
        self._state = _levels(m.topic) if m else None
        self._avail = _levels(m.availability.topic) if m and m.availability else None

    # ------------------------------------------------------------------ topics

    @property
    def filters(self) -> tuple[str, ...]:
        """The MQTT subscriptions this profile needs: everything under the fixed levels before
        ``{device}`` (``zigbee2mqtt/smoke/#``), so that a message on a topic of the vendor's
        that matches none of the profile's (a Zigbee2MQTT name with one level more,
        ``smoke/3-1/SD-201``) is seen, and dead-lettered (``unknown_topic``), not missed."""
        m = self.spec.mqtt
        if m is None:
            return ()
        topics = [m.topic] + ([m.availability.topic] if m.availability else [])
        return tuple(dict.fromkeys(_subtree(t) for t in topics))

    @property
    def max_body(self) -> int:
        """A pushed body (or an MQTT payload) larger than this is refused: the push endpoint
        answers 413 (nothing stored), an MQTT message is a ``too_large`` dead letter."""
        return MAX_VENDOR_PAYLOAD

    @property
    def urgent(self) -> bool:
        return self.spec.mqtt is None or self.spec.mqtt.urgent

    @property
    def bridge(self) -> str | None:
        """The vendor's topic tree (the first level of its topics): a bridge account
        ``bridge.<tree>`` may write ``<tree>/#``."""
        return None if self.spec.mqtt is None else self.spec.mqtt.topic.split("/", 1)[0]

    def match(self, topic: str) -> tuple[bool, str] | None:
        """(is the availability topic, the vendor's device) when ``topic`` is this profile's."""
        levels = topic.split("/")
        for avail, pattern in ((False, self._state), (True, self._avail)):
            if (
                pattern is not None
                and len(levels) == len(pattern[0])
                and all(p is None or p == t for p, t in zip(pattern[0], levels, strict=True))
            ):
                return avail, levels[pattern[1]]
        return None

    # ------------------------------------------------------------------ translation

    def from_mqtt(self, topic: str, payload: bytes) -> list[Canonical]:
        """The canonical messages of one vendor MQTT message; raises :class:`ProfileError`."""
        try:
            found = self.match(topic)
            if found is None:
                raise ProfileError("unknown_topic", f"not a topic of profile {self.id!r}")
            avail, vendor_id = found
            device = self._device(vendor_id)
            if avail:
                return [self._status(device, payload)]
            return self._translate(device, _object(payload), edges=True, key=None)
        except ProfileError:
            raise
        except Exception as e:  # a guard: every known case raises ProfileError above
            log.exception("profile %s failed on a message on %.120s", self.id, topic)
            raise ProfileError("bad_value", f"untranslatable: {type(e).__name__}") from e

    def from_http(self, body: bytes) -> list[Canonical]:
        """The canonical messages of one pushed JSON body; raises :class:`ProfileError`.
        Each carries a ``key`` made from the body's message id (when the profile names one)."""
        try:
            http = self.spec.http
            if http is None:
                raise ProfileError("unknown_topic", f"profile {self.id!r} takes no HTTP pushes")
            obj = _object(body)
            raw = _get(obj, http.device)
            if raw is _MISSING:
                raise ProfileError("missing_field", f"{http.device}: the device id")
            if not isinstance(raw, str | int) or isinstance(raw, bool):
                raise ProfileError("wrong_type", f"{http.device}: device id is not text")
            key = None
            if http.message_id is not None:
                mid = _get(obj, http.message_id)
                if mid is _MISSING:
                    raise ProfileError("missing_field", f"{http.message_id}: the message id")
                if not isinstance(mid, str | int) or isinstance(mid, bool) or mid == "":
                    raise ProfileError("wrong_type", f"{http.message_id}: message id not text")
                key = str(mid)
                problem = message_id_problem(key)
                if problem is not None:
                    reason: DecodeReason = (
                        "out_of_range" if len(key) > MAX_MESSAGE_ID else "bad_value"
                    )
                    raise ProfileError(reason, f"{http.message_id}: {problem}")
            return self._translate(self._device(str(raw)), obj, edges=False, key=key)
        except ProfileError:
            raise
        except Exception as e:  # a guard, as in from_mqtt
            log.exception("profile %s failed on a pushed body", self.id)
            raise ProfileError("bad_value", f"untranslatable: {type(e).__name__}") from e

    def _device(self, vendor_id: str) -> str:
        """The registry id of ``vendor_id``; :class:`ProfileError` (``unknown_topic``) when
        this profile may not speak for it (its ``devices``)."""
        device = self.spec.device_id.replace(PLACEHOLDER, vendor_id)
        if not any(fnmatch.fnmatchcase(device, p) for p in self.spec.devices):
            raise ProfileError(
                "unknown_topic", f"device {device[:64]!r} is not among profile {self.id}'s devices"
            )
        return device

    def _topic(self, device: str, stream: str) -> str:
        return topic_for(self.community_of(device) or self.community, self.kind, device, stream)

    def _status(self, device: str, payload: bytes) -> Canonical:
        spec = self.spec.mqtt.availability if self.spec.mqtt else None
        assert spec is not None
        try:
            obj: Any = _json(payload, MAX_STATUS_PAYLOAD)
        except ProfileError as e:
            if e.reason != "not_json":  # deep, keys twice, too large...: the payload's reason
                raise
            obj = None  # plain text
        if isinstance(obj, dict):
            value = _get(obj, spec.field)
        elif isinstance(obj, str):
            value = obj
        else:  # plain text: Zigbee2MQTT's legacy availability payload
            value = payload[:64].decode("utf-8", "replace").strip()
        if value in spec.online:
            state = "online"
        elif value in spec.offline:
            state = "offline"
        else:
            shown = value[:40] if isinstance(value, str) else type(value).__name__
            raise ProfileError("bad_value", f"availability {shown!r} is neither online nor offline")
        return Canonical(self._topic(device, "status"), _dump({"state": state}))

    def _translate(
        self, device: str, obj: dict[str, Any], *, edges: bool, key: str | None
    ) -> list[Canonical]:
        """Without side effects until everything is translated: the new values of
        ``trigger: change`` events are recorded last, when nothing can fail any more."""
        common: dict[str, Any] = {}
        if self.spec.time is not None:
            raw = _get(obj, self.spec.time.field)
            if raw is not _MISSING and raw is not None:
                common["ts"] = _when(raw, self.spec.time.form)
        if key is not None:  # the message's own time: a restarted counter is no retry
            key = message_key(key, at=common.get("ts"))
        out: list[Canonical] = []
        seen: list[tuple[tuple[str, int], str]] = []
        event_topic = self._topic(device, "event")
        for i, (ev, table) in enumerate(self._events):
            try:
                code = self._code(obj, ev)
            except ProfileError as e:  # this event's dead letter; the others go on
                out.append(Canonical(event_topic, b"", key, (e.reason, e.message)))
                continue
            if code is None:
                continue
            edge = None
            if edges and ev.trigger == "change":
                # every value is remembered, mapped or not: tamper true, false, true is two
                if not self._changed(device, i, code):
                    continue
                edge = (device, i)
                seen.append((edge, code))
            if code not in table:
                continue
            v = table[code]
            body: dict[str, Any] = {"event": v.event, **common}
            for attr in ("method", "direction"):
                if getattr(v, attr) is not None:
                    body[attr] = getattr(v, attr)
            for attr, path in ev.attrs.items():
                got = _get(obj, path)
                if isinstance(got, str | int) and not isinstance(got, bool) and got != "":
                    body[attr] = str(got)[:128]
            out.append(Canonical(event_topic, _dump(body), key, edge=edge))
        values = dict(self._metrics(obj))
        if values or not out:  # a report with nothing else still says the device is alive
            telemetry = _dump({**values, **common})
            out.insert(0, Canonical(self._topic(device, "telemetry"), telemetry, key))
        self._remember(seen)
        return out

    def _code(self, obj: dict[str, Any], ev: EventSpec) -> str | None:
        parts: list[str] = []
        for path in ev.fields:
            v = _get(obj, path)
            if v is _MISSING or v is None:
                return None
            k = None if isinstance(v, float) else value_key(v)
            if k is None:
                raise ProfileError("wrong_type", f"{path}: {type(v).__name__} is not a code")
            if len(ev.fields) == 1 and _bools(ev) and not isinstance(v, bool):
                raise ProfileError("wrong_type", f"{path}: expected true or false")
            parts.append(k)
        return "/".join(parts)

    def _changed(self, device: str, index: int, code: str) -> bool:
        """Whether ``code`` differs from the last value recorded (nothing is recorded here)."""
        with self._lock:
            return self._last.get((device, index)) != code

    def _remember(self, values: list[tuple[tuple[str, int], str]]) -> None:
        with self._lock:
            for slot, code in values:
                self._last.pop(slot, None)
                if len(self._last) >= MAX_REMEMBERED:
                    self._last.pop(next(iter(self._last)))
                self._last[slot] = code

    def forget(self, edge: tuple[str, int]) -> None:
        """The event of ``edge`` was not journaled (a dead letter, refused by the journal):
        forget its value, so that the device's next report counts as a change and makes it
        again (an alarm still on is raised by the next report)."""
        with self._lock:
            self._last.pop(edge, None)

    def _metrics(self, obj: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """The canonical metrics, converted; a value of the wrong type goes on as it is, so
        that :func:`~ingest.payloads.decode` makes the telemetry (only) a dead letter with its
        reason, as it does for a native device's."""
        for name, m in self.spec.metrics.items():
            v = _get(obj, m.field)
            if v is _MISSING or v is None:
                continue
            if self._types[name] is bool or isinstance(v, bool) or not isinstance(v, int | float):
                yield name, v
                continue
            if m.unit == "fahrenheit":
                x = (v - 32) * 5 / 9
            elif m.unit == "fraction":
                x = v * 100
            else:
                x = v * (1 if m.scale is None else m.scale) + (m.offset or 0)
            yield name, round(x, 6) if isinstance(x, float) else x


def _bools(ev: EventSpec) -> bool:
    return set(ev.map) <= {"true", "false"}


def _subtree(pattern: str) -> str:
    """``zigbee2mqtt/smoke/{device}/availability`` → ``zigbee2mqtt/smoke/#``."""
    return pattern[: pattern.index(PLACEHOLDER)] + "#"


def _levels(pattern: str) -> tuple[list[str | None], int]:
    levels = pattern.split("/")
    return [None if lv == PLACEHOLDER else lv for lv in levels], levels.index(PLACEHOLDER)


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Profiles:
    """The loaded profiles: find the one for a vendor topic, or by id."""

    def __init__(self, profiles: Iterable[Profile] = ()) -> None:
        self._all = list(profiles)
        self._by_id = {p.id: p for p in self._all}

    def __iter__(self) -> Iterator[Profile]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def get(self, profile_id: str) -> Profile | None:
        return self._by_id.get(profile_id)

    def for_topic(self, topic: str) -> Profile | None:
        for p in self._all:
            if p.match(topic) is not None:
                return p
        return None

    def filters(self, *, urgent: bool) -> tuple[str, ...]:
        """The MQTT subscriptions of the profiles read on the urgent session (or the other),
        none inside another (overlapping subscriptions may deliver a message twice)."""
        mine = dict.fromkeys(f for p in self._all if p.urgent == urgent for f in p.filters)
        return tuple(
            f for f in mine if not any(o != f and f.startswith(o.removesuffix("#")) for o in mine)
        )

    def place_by(self, community_of: Callable[[str], str | None]) -> None:
        """Each translated device in its registered community, as ``community_of`` (read at
        each message: give one that follows registry changes) says."""
        for p in self._all:
            p.community_of = community_of

    def bridges(self) -> dict[str, tuple[str, ...]]:
        """Bridge account name → the topic trees it may write (``bridge.zigbee2mqtt`` →
        ``zigbee2mqtt/#``)."""
        trees = sorted({p.bridge for p in self._all if p.bridge is not None})
        return {f"bridge.{t}": (f"{t}/#",) for t in trees}


def _nowhere(_device: str) -> None:
    return None


def load_profiles(paths: Iterable[str | Path], community: str) -> Profiles:
    """The profiles of ``paths``, or :class:`ProfileFileError` listing every problem as
    ``FILE line N: profile 'ID': field 'FIELD': message``."""
    results = read_profile_files([Path(p) for p in paths])
    errors = [e for r in results for e in r.errors]
    if errors:
        raise ProfileFileError(errors)
    return Profiles(Profile(s, community) for r in results for s in r.profiles)


def shipped_profiles(community: str) -> Profiles:
    return load_profiles(shipped_profile_files(), community)


__all__ = [
    "Canonical",
    "Profile",
    "ProfileError",
    "ProfileFileError",
    "Profiles",
    "load_profiles",
    "shipped_profile_files",
    "shipped_profiles",
]

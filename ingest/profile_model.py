"""The device profile file schema (pydantic, ``extra="forbid"``), and reading profile files with
errors that name the file, the profile and the field.

A profile file is a mapping with one key, ``profiles``: a list of profiles. A profile says how
one vendor's messages become canonical ones (README, "Device profiles"): where the device id
is (a ``{device}`` level of an MQTT topic, or a field of an HTTP body), which fields are which
canonical metrics (with a scale, an offset or a unit), which values are which canonical events,
where the time is and in what form, and the vendor's availability topic.

YAML is read as YAML 1.2 (the registry's loader): a vendor value ``ON``, ``off`` or ``no``
stays text, as the vendor sends it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from base.yamlload import StrictYaml12Loader as _Loader
from ingest.payloads import MODELS
from ingest.topics import KINDS, Kind

ID: Final = r"[A-Za-z0-9_-]{1,64}"
PLACEHOLDER: Final = "{device}"
_PATH = re.compile(r"[^.\s]+(?:\.[^.\s]+)*")
_LEVEL = re.compile(r"[^+#{}/]+")
ATTRS: Final = ("direction", "method", "credential")
"""The canonical text fields of a gate event a profile may fill."""


def telemetry_fields(kind: str) -> dict[str, type]:
    """The canonical metrics of ``kind``'s telemetry, by name, with their type (float or bool)."""
    model = MODELS[(kind, "telemetry")]
    out: dict[str, type] = {}
    for name, f in model.model_fields.items():
        if name in ("ts", "seq"):
            continue
        out[name] = bool if bool in get_args(f.annotation) else float
    return out


def event_names(kind: str) -> tuple[str, ...]:
    """The canonical event names of ``kind``."""
    return get_args(MODELS[(kind, "event")].model_fields["event"].annotation)


def value_key(v: object) -> str | None:
    """A vendor value as a map key: ``true``/``false``, an integer's digits, a string as it is;
    None for anything else (a float, a list, null). YAML keys go through it too, so that
    ``true:`` and ``1:`` in a profile match JSON ``true`` and ``1``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return v
    return None


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Path_ = Annotated[str, Field(pattern=_PATH.pattern, max_length=200)]
"""A field of the vendor's JSON object; dots go into nested objects (``Event.code``)."""


class TimeSpec(_Spec):
    field: Path_
    form: Literal["auto", "rfc3339", "epoch_s", "epoch_ms"] = "auto"
    """``auto``: text is RFC 3339, a number epoch milliseconds."""


class MetricSpec(_Spec):
    field: Path_
    unit: Literal["fahrenheit", "fraction"] | None = None
    """``fahrenheit`` → Celsius; ``fraction`` (0–1) → percent."""
    scale: float | None = None
    offset: float | None = None

    @model_validator(mode="after")
    def _one_conversion(self) -> MetricSpec:
        if self.unit is not None and (self.scale is not None or self.offset is not None):
            raise ValueError("give either unit or scale/offset, not both")
        return self


class EventValue(_Spec):
    event: str
    method: Literal["card", "face", "qr", "pin"] | None = None
    direction: Literal["in", "out"] | None = None


class EventSpec(_Spec):
    field: Path_ | list[Path_]
    """The field holding the vendor's value; several fields make one code, their values joined
    with ``/`` (``[Event.major, Event.minor]`` → ``"5/75"``)."""
    map: dict[str, str | EventValue] = Field(min_length=1)
    """Vendor value → canonical event (or the event with its ``method``/``direction``). Values
    not in the map make no event."""
    trigger: Literal["message", "change"] = "message"
    """``message``: every message carrying a mapped value makes its event (buttons, event codes).
    ``change``: only when the value differs from the device's last one (states repeated in every
    report, like Zigbee2MQTT's ``smoke``); the first after a start always counts."""
    attrs: dict[str, Path_] = Field(default_factory=dict)
    """Canonical text field (``credential``, ``direction``, ``method``) → vendor field."""

    @field_validator("map", mode="before")
    @classmethod
    def _keys(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        out: dict[str, object] = {}
        for k, val in v.items():
            key = value_key(k)
            if key is None:
                raise ValueError(f"key {k!r}: use true/false, an integer or text")
            out[key] = val
        return out

    @field_validator("attrs")
    @classmethod
    def _attrs(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(v) - set(ATTRS))
        if bad:
            raise ValueError(f"unknown attribute {bad[0]!r} (allowed: {', '.join(ATTRS)})")
        return v

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,) if isinstance(self.field, str) else tuple(self.field)

    def events(self) -> dict[str, EventValue]:
        return {k: EventValue(event=v) if isinstance(v, str) else v for k, v in self.map.items()}


def _pattern(v: str) -> str:
    levels = v.split("/")
    if levels.count(PLACEHOLDER) != 1:
        raise ValueError(f"needs exactly one level {PLACEHOLDER!r}, got {v!r}")
    if levels[0] == PLACEHOLDER:
        raise ValueError(f"the first level must be fixed text (the bridge's tree), got {v!r}")
    for level in levels:
        if level != PLACEHOLDER and not _LEVEL.fullmatch(level):
            raise ValueError(f"level {level!r}: fixed text without + # {{ }} (in {v!r})")
    if levels[0] == "community":
        raise ValueError("community/... is the native topic tree, not a vendor's")
    return v


class AvailabilitySpec(_Spec):
    topic: Annotated[str, Field(max_length=200)]
    field: Path_ = "state"
    """Where the state is in a JSON object; a payload that is not one is the state itself
    (Zigbee2MQTT's legacy plain ``online``)."""
    online: list[str] = Field(default_factory=lambda: ["online"], min_length=1)
    offline: list[str] = Field(default_factory=lambda: ["offline"], min_length=1)

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        return _pattern(v)


class MqttSpec(_Spec):
    topic: Annotated[str, Field(max_length=200)]
    """The vendor's state topic, one level of it ``{device}``: ``zigbee2mqtt/smoke/{device}``."""
    availability: AvailabilitySpec | None = None
    urgent: bool = True
    """Read on the urgent session (default): a vendor message may carry an alarm and telemetry
    at once, and an alarm must never wait behind a telemetry backlog."""

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        return _pattern(v)


class HttpSpec(_Spec):
    device: Path_
    """The body field holding the device id."""
    message_id: Path_ | None = None
    """The body field holding the platform's message id: a retried push is journaled once."""


class ProfileSpec(_Spec):
    id: Annotated[str, Field(pattern=f"^{ID}$")]
    description: str = ""
    kind: Kind
    device_id: Annotated[str, Field(max_length=64)] = PLACEHOLDER
    """The registry's device id, made from the vendor's: ``"{device}"``, ``"z2m-{device}"``."""
    devices: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_*?-]{1,64}$")]] = Field(
        default_factory=lambda: ["*"], min_length=1
    )
    """The registry ids this profile may speak for, as patterns (``*`` any characters, ``?``
    one), as an integration's ``devices``: a message translated onto another id is a dead
    letter (``unknown_topic``), so that a bridge cannot raise or clear a native device's
    alarm. Default: any (give vendor devices ids of their own, ``device_id: "z2m-{device}"``,
    or list them here)."""
    mqtt: MqttSpec | None = None
    http: HttpSpec | None = None
    time: TimeSpec | None = None
    metrics: dict[str, MetricSpec] = Field(default_factory=dict)
    """Canonical metric → where it is in the vendor's message."""
    events: list[EventSpec] = Field(default_factory=list)

    @field_validator("device_id")
    @classmethod
    def _template(cls, v: str) -> str:
        if v.count(PLACEHOLDER) != 1:
            raise ValueError(f"needs {PLACEHOLDER!r} exactly once, got {v!r}")
        return v

    @model_validator(mode="after")
    def _somewhere(self) -> ProfileSpec:
        if self.mqtt is None and self.http is None:
            raise ValueError("give mqtt, http or both: where the messages come from")
        return self


def problems(spec: ProfileSpec) -> list[tuple[str, str]]:
    """(field, message) for every metric and event ``spec``'s kind does not have: checked after
    the schema, so that each is reported, not only the first."""
    found: list[tuple[str, str]] = []
    known = telemetry_fields(spec.kind)
    for name in spec.metrics:
        if name not in known:
            found.append(
                (f"metrics.{name}", f"not a {spec.kind} metric (one of {', '.join(known)})")
            )
    names = event_names(spec.kind)
    for i, ev in enumerate(spec.events):
        for key, val in ev.events().items():
            if val.event not in names:
                found.append(
                    (
                        f"events[{i}].map.{key}",
                        f"{val.event!r} is not a {spec.kind} event (one of {', '.join(names)})",
                    )
                )
            if (val.method or val.direction) and spec.kind != "gate":
                found.append((f"events[{i}].map.{key}", "method, direction: gate events only"))
        if ev.attrs and spec.kind != "gate":
            found.append((f"events[{i}].attrs", "gate events only"))
    return found


# --- reading files ------------------------------------------------------------------------------


@dataclass
class ProfileFileResult:
    """The valid profiles of one file and its error lines."""

    path: str
    profiles: list[ProfileSpec] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_yaml12(text: str) -> Any:
    """``text`` as YAML 1.2 (``no`` and ``on`` stay text), a key given twice an error: the
    loader of profile files, for the other small YAML files of the edge (integrations).
    Raises :class:`yaml.YAMLError`."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _describe(err: ErrorDetails) -> tuple[str, str]:
    """(field, message) for one pydantic error of one profile."""
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in ("str", "EventValue"))]
    name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    kind, msg = err["type"], err["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "missing":
        msg = "required"
    elif kind == "extra_forbidden":
        msg = "unknown field"
    elif kind in ("literal_error", "string_pattern_mismatch", "enum"):
        msg = f"{msg}, got {err.get('input')!r}"
    return name, msg


def read_profile_file(path: Path) -> ProfileFileResult:
    """Validate one profile file, collecting every error; never raises for bad input."""
    res = ProfileFileResult(str(path))

    def bad(line: int | None, who: str, where: str, message: str) -> None:
        at = f" line {line}" if line is not None else ""
        field_ = f": field {where!r}" if where else ""
        res.errors.append(f"{path}{at}: {who}{field_}: {message}".replace(": : ", ": "))

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        res.errors.append(f"{path}: cannot read: {e}")
        return res
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).split("\n")[0]
        bad(line, "", "", f"invalid YAML: {problem}")
        return res
    finally:
        loader.dispose()
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), list):
        bad(None, "", "", "expected a mapping with a 'profiles' list")
        return res
    for key in data:
        if key != "profiles":
            bad(None, "", key, "unknown top-level field (allowed: profiles)")
    assert isinstance(node, yaml.MappingNode)
    items = next(v for k, v in node.value if k.value == "profiles")
    lines = [n.start_mark.line + 1 for n in getattr(items, "value", [])]
    for i, raw in enumerate(data["profiles"], start=1):
        pid = raw.get("id") if isinstance(raw, dict) else None
        who = f"profile {pid!r}" if isinstance(pid, str) else f"profile #{i}"
        line = lines[i - 1] if i - 1 < len(lines) else None
        try:
            spec = ProfileSpec.model_validate(raw)
        except ValidationError as e:
            for err in e.errors(include_url=False):
                where, msg = _describe(err)
                bad(line, who, where, msg)
            continue
        found = problems(spec)
        for where, msg in found:
            bad(line, who, where, msg)
        if not found:
            res.profiles.append(spec)
    return res


def read_profile_files(paths: list[Path]) -> list[ProfileFileResult]:
    """Validate profile files; across files, a profile id or an MQTT topic used twice is an
    error (a vendor topic must belong to one profile)."""
    results = [read_profile_file(Path(p)) for p in paths]
    ids: dict[str, str] = {}
    topics: dict[str, str] = {}
    for res in results:
        for p in res.profiles:
            if p.id in ids:
                res.errors.append(
                    f"{res.path}: profile {p.id!r}: field 'id': duplicate id, first in {ids[p.id]}"
                )
            ids.setdefault(p.id, res.path)
            mine = [] if p.mqtt is None else [p.mqtt.topic]
            if p.mqtt is not None and p.mqtt.availability is not None:
                mine.append(p.mqtt.availability.topic)
            for t in mine:
                filt = t.replace(PLACEHOLDER, "+")
                if filt in topics:
                    res.errors.append(
                        f"{res.path}: profile {p.id!r}: field 'mqtt.topic': {t!r} is already"
                        f" profile {topics[filt]}'s"
                    )
                topics.setdefault(filt, repr(p.id))
    return results


def shipped_profile_files() -> list[Path]:
    """The profile files shipped with the package (``ingest/vendors/*.yaml``)."""
    return sorted((Path(__file__).resolve().parent / "vendors").glob("*.yaml"))


__all__ = [
    "KINDS",
    "EventSpec",
    "ProfileFileResult",
    "ProfileSpec",
    "check_main",
    "load_yaml12",
    "profile_files",
    "read_profile_file",
    "read_profile_files",
    "shipped_profile_files",
]


def profile_files(given: list[Path] | None) -> list[Path]:
    """The profile files to load: ``given`` (``JIAYUAN_PROFILES``), ``shipped`` in it standing
    for the shipped files; None (not set) means the shipped files."""
    if given is None:
        return shipped_profile_files()
    out: list[Path] = []
    for p in given:
        out += shipped_profile_files() if str(p) == "shipped" else [p]
    return out


def check_main(paths: list[Path]) -> int:
    """``jiayuan profiles check [FILE...]`` (the shipped files when none): ``OK: N profiles in
    FILE`` on stdout per good file, errors on stderr; 0 when every file is valid, else 1."""
    results = read_profile_files(paths or shipped_profile_files())
    for res in results:
        for line in res.errors:
            print(line, file=sys.stderr)
        if not res.errors:
            print(f"OK: {len(res.profiles)} profiles in {res.path}")
    bad = [r for r in results if r.errors]
    if bad:
        errors = sum(len(r.errors) for r in bad)
        print(f"{errors} error(s) in {len(bad)} file(s)", file=sys.stderr)
        return 1
    return 0

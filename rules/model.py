"""The rule file schema (pydantic, ``extra="forbid"``) and loading with errors that name the file,
the rule and the field.

A rule file is ``{rules: [...]}``; every rule has a ``type``: ``threshold``, ``event``,
``absence``, ``count``, ``zone``, or ``all`` / ``any`` (a combination of conditions), and may
be limited to local days and hours (``active``, :mod:`rules.windows`). Metric and event names
are those of the payload models in :mod:`ingest.payloads`, so a rule can never name a field
the decoder does not deliver.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from base.yamlload import StrictSafeLoader
from ingest.payloads import MODELS
from ingest.topics import KINDS, Kind, Stream
from rules.forms import CONDITION_TAGS, Baseline, Condition, Verify, problems
from rules.transitions import Route, Severity, Signal
from rules.windows import ActiveWindow, Where

__all__ = [
    "EVENTS",
    "METRICS",
    "AbsenceRule",
    "ComboRule",
    "CountRule",
    "EventRule",
    "Rule",
    "RuleFileError",
    "RuleFileResult",
    "ThresholdRule",
    "ZoneRule",
    "builtin_pack",
    "load_rules",
    "parse_duration",
    "read_rule_files",
]


def _metrics(kind: str) -> frozenset[str]:
    model = MODELS.get((kind, "telemetry"))
    if model is None:
        return frozenset()
    return frozenset(
        name
        for name, f in model.model_fields.items()
        if name not in ("ts", "seq") and bool not in get_args(f.annotation)
    )


def _events(kind: str) -> frozenset[str]:
    model = MODELS.get((kind, "event"))
    return frozenset(get_args(model.model_fields["event"].annotation)) if model else frozenset()


METRICS: Final[dict[str, frozenset[str]]] = {k: _metrics(k) for k in KINDS}
"""Numeric telemetry fields a threshold rule may watch, per device kind."""
EVENTS: Final[dict[str, frozenset[str]]] = {k: _events(k) for k in KINDS}
"""Event names per device kind."""

_NUM = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"(?:{_NUM}d)?(?:{_NUM}h)?(?:{_NUM}m)?(?:{_NUM}s)?")
_UNITS: Final = (86400.0, 3600.0, 60.0, 1.0)


def parse_duration(value: object) -> float:
    """``"30s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"1h30m"`` or a number of seconds → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        m = _DURATION.fullmatch(text)
        if text == "0":
            return 0.0
        if text and m:
            return sum(float(g) * u for g, u in zip(m.groups(), _UNITS, strict=True) if g)
    raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 10m, 2h, 1h30m)")


Duration = Annotated[float, BeforeValidator(parse_duration)]
_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


def _kind_of(info: ValidationInfo) -> str | None:
    kind = info.data.get("kind")
    return kind if isinstance(kind, str) else None


def _check_events(names: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    kind = _kind_of(info)
    if kind is None:
        return names
    bad = [n for n in names if n not in EVENTS[kind]]
    if bad:
        known = ", ".join(sorted(EVENTS[kind]))
        raise ValueError(f"unknown event {', '.join(map(repr, bad))} for {kind} (known: {known})")
    return names


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_NAME)
    kind: Kind
    severity: Severity
    signal: Signal
    route: Route
    summary: str = Field(min_length=1, max_length=120)
    """Short text for staff; never health values."""
    description: str = ""
    enabled: bool = True
    active: ActiveWindow | None = None
    """Fires only from readings whose event time is in this local window (clears always)."""
    where: Where | None = None
    """Only the devices of the kind placed so (e.g. building doors among gates)."""


class ThresholdRule(_Rule):
    """A telemetry metric above (or below) a level for a duration; clears past ``clear``."""

    type: Literal["threshold"]
    metric: str
    baseline: Baseline | None = None
    """The device's own median at this hour ± an offset, instead of ``above``/``below``."""
    above: float | None = None
    below: float | None = Field(default=None, validate_default=True)
    clear: float | None = Field(default=None, validate_default=True)
    for_: Duration = Field(default=0.0, alias="for", ge=0)
    override: str | None = Field(default=None, pattern=_NAME)
    """A resident threshold name (e.g. ``heart_rate_high``) that replaces the trigger level."""
    max_gap: Duration | None = Field(default=None, gt=0)
    """A pending episode restarts after a gap this long; default max(``for``, 5 min)."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str, info: ValidationInfo) -> str:
        kind = _kind_of(info)
        if kind is not None and v not in METRICS[kind]:
            known = ", ".join(sorted(METRICS[kind])) or "none"
            raise ValueError(f"unknown metric {v!r} for {kind} (known: {known})")
        return v

    @field_validator("below")
    @classmethod
    def _one_side(cls, v: float | None, info: ValidationInfo) -> float | None:
        if info.data.get("baseline") is not None:
            if v is not None or info.data.get("above") is not None:
                raise ValueError("with a baseline, give above_by/below_by in it, not above/below")
            return v
        if "above" in info.data and (info.data["above"] is None) == (v is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        return v

    @field_validator("clear")
    @classmethod
    def _safe_side(cls, v: float | None, info: ValidationInfo) -> float | None:
        if info.data.get("baseline") is not None:
            if v is not None:
                raise ValueError("with a baseline, give clear_by in it, not clear")
            return v
        if v is None:
            if "below" in info.data and "baseline" in info.data:
                raise ValueError("required (the level at which the alert clears)")
            return v
        above, below = info.data.get("above"), info.data.get("below")
        if above is not None and below is None and v > above:
            raise ValueError(f"clear level {v:g} must be at or below the trigger (above {above:g})")
        if below is not None and above is None and v < below:
            raise ValueError(f"clear level {v:g} must be at or above the trigger (below {below:g})")
        return v

    @field_validator("override")
    @classmethod
    def _not_both(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("baseline") is not None:
            raise ValueError("a baseline rule takes no resident override")
        return v

    @property
    def gap(self) -> float:
        return self.max_gap if self.max_gap is not None else max(self.for_, 300.0)


class EventRule(_Rule):
    """Fires on each of ``events``; with ``clear_events`` it clears on one of them, without them
    the alert stays until a person resolves it."""

    type: Literal["event"]
    events: tuple[str, ...] = Field(min_length=1)
    clear_events: tuple[str, ...] = ()
    verify: Verify | None = None
    """Recorded at once, paged only if no cancel event came within the window."""
    persist: Duration | None = Field(default=None, gt=0)
    """Recorded at once, paged only if not cleared within this long (else a pre-alarm)."""

    @field_validator("events")
    @classmethod
    def _known_events(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return _check_events(v, info)

    @field_validator("clear_events")
    @classmethod
    def _known_clear(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        both = set(v) & set(info.data.get("events", ()))
        if both:
            raise ValueError(f"{', '.join(map(repr, sorted(both)))} both fires and clears")
        return _check_events(v, info)

    @field_validator("persist")
    @classmethod
    def _clears(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and not info.data.get("clear_events"):
            raise ValueError("persist needs clear_events (what ends the condition)")
        return v

    @property
    def wait(self) -> float | None:
        """How long the first page waits (the verification or persistence window)."""
        waits = [w for w in (self.verify and self.verify.within, self.persist) if w]
        return max(waits) if waits else None


class AbsenceRule(_Rule):
    """Nothing heard from the device (on ``streams``, default all) for ``for`` → fire."""

    type: Literal["absence"]
    for_: Duration = Field(alias="for", gt=0)
    streams: tuple[Stream, ...] | None = None

    @field_validator("streams")
    @classmethod
    def _some(cls, v: tuple[Stream, ...] | None) -> tuple[Stream, ...] | None:
        if v is not None and not v:
            raise ValueError("give at least one stream, or leave out for all")
        return v


class CountRule(_Rule):
    """``threshold`` ``event`` events from one device within ``window`` → fire."""

    type: Literal["count"]
    event: str
    threshold: int = Field(ge=1)
    window: Duration = Field(gt=0)

    @field_validator("event")
    @classmethod
    def _known_event(cls, v: str, info: ValidationInfo) -> str:
        return _check_events((v,), info)[0]


class ZoneRule(_Rule):
    """A wearable outside its resident's ``allowed_area`` for ``for``; clears ``margin_m``
    back inside."""

    type: Literal["zone"]
    for_: Duration = Field(default=0.0, alias="for", ge=0)
    margin_m: float = Field(default=25.0, ge=0)
    max_gap: Duration | None = Field(default=None, gt=0)

    @field_validator("kind")
    @classmethod
    def _wearable(cls, v: str) -> str:
        if v != "wearable":
            raise ValueError("zone rules apply to wearables only")
        return v

    @property
    def gap(self) -> float:
        return self.max_gap if self.max_gap is not None else max(self.for_, 300.0)


class ComboRule(_Rule):
    """``all`` (or ``any``) of ``conditions`` hold, each with its own duration, in event time;
    clears when that stops being so. ``scope: unit``: over the devices of one unit (each
    condition names its ``kind``); the alert is on the unit's device of the rule's ``kind``."""

    type: Literal["all", "any"]
    scope: Literal["device", "unit"] = "device"
    conditions: tuple[Condition, ...] = Field(min_length=1, max_length=8)
    max_gap: Duration | None = Field(default=None, gt=0)
    """A level condition's episode restarts after a gap this long; default max(``for``, 5 min)."""


Rule = ThresholdRule | EventRule | AbsenceRule | CountRule | ZoneRule | ComboRule
_TYPES: Final[dict[str, type[_Rule]]] = {
    "threshold": ThresholdRule,
    "event": EventRule,
    "absence": AbsenceRule,
    "count": CountRule,
    "zone": ZoneRule,
    "all": ComboRule,
    "any": ComboRule,
}
_ADAPTER: Final[TypeAdapter[Rule]] = TypeAdapter(Annotated[Rule, Field(discriminator="type")])


class RuleFileError(ValueError):
    """One or more rule files are invalid; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class RuleFileResult:
    """The valid rules of one file (with their 1-based index) and its error lines."""

    path: str
    rules: list[tuple[int, Rule]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _who(raw: object, index: int) -> str:
    rid = raw.get("id") if isinstance(raw, dict) else None
    return f"rule {rid!r} (#{index})" if isinstance(rid, str) else f"rule #{index}"


def _describe(err: ErrorDetails) -> tuple[str, str]:
    """(field, message) for one pydantic error of one rule."""
    loc = list(err["loc"])
    kind, msg = err["type"], err["msg"]
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        tags = ", ".join(_TYPES)
        if kind == "union_tag_not_found":
            return "type", f"required (one of {tags})"
        return "type", f"unknown type {err['input']['type']!r} (one of {tags})"
    if loc and loc[0] in _TYPES:
        model: type[BaseModel] = _TYPES[loc[0]]
        loc = loc[1:]
    else:
        model = _Rule
    if len(loc) >= 3 and loc[0] == "conditions" and loc[2] in CONDITION_TAGS:
        model = CONDITION_TAGS[str(loc[2])]  # the condition's form, not a field
        loc = [p for i, p in enumerate(loc) if i != 2]
    elif kind == "extra_forbidden":
        model = _model_at(model, loc)
    name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if not name and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "", "expected a mapping of fields"
    if kind == "extra_forbidden":
        allowed = ", ".join(f.alias or n for n, f in model.model_fields.items())
        return name, f"unknown field (allowed: {allowed})"
    if kind == "missing":
        return name, "required"
    if kind == "value_error":
        return name, msg.removeprefix("Value error, ")
    if kind in ("literal_error", "string_pattern_mismatch"):
        return name, f"{msg}, got {err['input']!r}"
    return name, msg


def _model_at(model: type[BaseModel], loc: list[int | str]) -> type[BaseModel]:
    """The model holding the last field of ``loc`` (for "allowed:" lists of nested parts)."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        f = model.model_fields.get(str(part))
        inner = [a for a in get_args(f.annotation) if isinstance(a, type)] if f else []
        found = next((a for a in inner if issubclass(a, BaseModel)), None)
        if found is None and f is not None and isinstance(f.annotation, type):
            found = f.annotation if issubclass(f.annotation, BaseModel) else None
        if found is None:
            return model
        model = found
    return model


def _read_one(path: Path) -> RuleFileResult:
    res = RuleFileResult(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        res.errors.append(f"{path}: cannot read: {e}")
        return res
    try:
        data = yaml.load(text, Loader=StrictSafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        res.errors.append(f"{path}: {where}invalid YAML: {e.problem}")
        return res
    except yaml.YAMLError as e:
        res.errors.append(f"{path}: invalid YAML: {e}")
        return res
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        res.errors.append(f"{path}: expected a mapping with a 'rules' list")
        return res
    for key in data:
        if key != "rules":
            res.errors.append(f"{path}: field {key!r}: unknown top-level field (allowed: rules)")
    for i, raw in enumerate(data["rules"], start=1):
        try:
            rule = _ADAPTER.validate_python(raw)
        except ValidationError as e:
            for err in e.errors(include_url=False):
                name, msg = _describe(err)
                where = f": field {name!r}" if name else ""
                res.errors.append(f"{path}: {_who(raw, i)}{where}: {msg}")
            continue
        found = problems(rule)
        for name, msg in found:
            res.errors.append(f"{path}: {_who(raw, i)}: field {name!r}: {msg}")
        if not found:
            res.rules.append((i, rule))
    return res


def read_rule_files(paths: Iterable[str | Path]) -> list[RuleFileResult]:
    """Validate rule files, collecting every error (duplicate ids across files too); never
    raises for bad input."""
    results = [_read_one(Path(p)) for p in paths]
    first: dict[str, str] = {}
    for res in results:
        for i, rule in res.rules:
            where = f"{res.path} (#{i})"
            if rule.id in first:
                res.errors.append(
                    f"{res.path}: rule {rule.id!r} (#{i}): field 'id': "
                    f"duplicate id, first defined in {first[rule.id]}"
                )
            else:
                first[rule.id] = where
    return results


def load_rules(paths: Iterable[str | Path]) -> list[Rule]:
    """All rules of ``paths`` (disabled ones included), or :class:`RuleFileError` listing every
    problem as ``FILE: rule 'ID' (#N): field 'FIELD': message``."""
    results = read_rule_files(paths)
    errors = [e for res in results for e in res.errors]
    if errors:
        raise RuleFileError(errors)
    return [rule for res in results for _, rule in res.rules]


def builtin_pack() -> Path:
    """The community rule pack shipped with the package."""
    return Path(__file__).resolve().parent / "packs" / "community.yaml"

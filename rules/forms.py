"""The parts of the newer rule forms: a verification window, a personal baseline, and the
conditions of a combination (``type: all`` / ``type: any``).

Names (metrics, events) are checked against the device kind by :func:`problems` once the whole
rule is read, so each error can name its exact field (``conditions[1].metric``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from ingest.topics import Kind

if TYPE_CHECKING:
    from rules.model import Rule

__all__ = [
    "MAX_ALARM_WAIT_S",
    "Baseline",
    "Condition",
    "EventCondition",
    "LevelCondition",
    "UnchangedCondition",
    "Verify",
    "problems",
]

MAX_ALARM_WAIT_S: Final = 60.0
"""The longest an ``alarm`` rule may hold its first page for a verification window."""


def _duration(v: object) -> float:
    from rules.model import parse_duration

    return parse_duration(v)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("within", "for_", "unchanged", mode="before", check_fields=False)
    @classmethod
    def _seconds(cls, v: object) -> float:
        return _duration(v)


class Verify(_Part):
    """Wait ``within`` for one of ``cancel_events`` (the wearer's "I'm fine") before paging."""

    cancel_events: tuple[str, ...] = Field(min_length=1)
    within: float = Field(gt=0)


class Baseline(_Part):
    """The trigger is the device's own median of the metric at this hour of the day over the
    last ``days`` days, plus ``above_by`` (or minus ``below_by``); it clears ``clear_by`` from
    that median. Needs ``min_days`` days with data at that hour, else the rule does not apply."""

    above_by: float | None = Field(default=None, gt=0)
    below_by: float | None = Field(default=None, gt=0, validate_default=True)
    clear_by: float = Field(ge=0)
    days: int = Field(default=14, ge=1, le=60)
    min_days: int = Field(default=7, ge=1, le=60)

    @field_validator("below_by")
    @classmethod
    def _one_side(cls, v: float | None, info: Any) -> float | None:
        if (info.data.get("above_by") is None) == (v is None):
            raise ValueError("give exactly one of 'above_by' or 'below_by'")
        return v

    @field_validator("clear_by")
    @classmethod
    def _inside(cls, v: float, info: Any) -> float:
        by = info.data.get("above_by") or info.data.get("below_by")
        if by is not None and v >= by:
            raise ValueError(f"clear_by {v:g} must be less than the trigger's distance {by:g}")
        return v

    @field_validator("min_days")
    @classmethod
    def _enough(cls, v: int, info: Any) -> int:
        days = info.data.get("days")
        if isinstance(days, int) and v > days:
            raise ValueError(f"min_days {v} is more than days {days}")
        return v

    @property
    def sign(self) -> float:
        return 1.0 if self.above_by is not None else -1.0

    @property
    def offset(self) -> float:
        return self.above_by if self.above_by is not None else self.below_by or 0.0


class _Condition(_Part):
    kind: Kind | None = None
    """The device kind it reads (unit scope); default the rule's kind."""


class LevelCondition(_Condition):
    """``metric`` above (or below) a level for ``for``; false again past ``clear`` (default:
    the level itself)."""

    metric: str
    above: float | None = None
    below: float | None = None
    clear: float | None = None
    for_: float = Field(default=0.0, alias="for", ge=0)


class UnchangedCondition(_Condition):
    """``metric`` reported the same value for at least ``unchanged`` (e.g. cumulative
    ``steps``: no steps)."""

    metric: str
    unchanged: float = Field(gt=0)


class EventCondition(_Condition):
    """``event`` seen within the last ``within``."""

    event: str
    within: float = Field(gt=0)


def _tag(v: Any) -> str:
    """Which form a condition is: by its keys (reading a file) or its class (writing one)."""
    if isinstance(v, dict):
        return "unchanged" if "unchanged" in v else "event" if "event" in v else "level"
    return (
        "unchanged"
        if isinstance(v, UnchangedCondition)
        else "event"
        if isinstance(v, EventCondition)
        else "level"
    )


Condition = Annotated[
    Annotated[LevelCondition, Tag("level")]
    | Annotated[UnchangedCondition, Tag("unchanged")]
    | Annotated[EventCondition, Tag("event")],
    Discriminator(_tag),
]
CONDITION_TAGS: Final[dict[str, type[BaseModel]]] = {
    "level": LevelCondition,
    "unchanged": UnchangedCondition,
    "event": EventCondition,
}


def problems(rule: Rule) -> list[tuple[str, str]]:
    """(field, message) for what only the whole rule can tell: names against device kinds,
    the alarm wait bound, the kinds of a combination's conditions."""
    from rules.model import EVENTS, METRICS, ComboRule, EventRule

    out: list[tuple[str, str]] = []

    def metric(where: str, kind: str, name: str) -> None:
        if name not in METRICS[kind]:
            known = ", ".join(sorted(METRICS[kind])) or "none"
            out.append((where, f"unknown metric {name!r} for {kind} (known: {known})"))

    def event(where: str, kind: str, name: str) -> None:
        if name not in EVENTS[kind]:
            known = ", ".join(sorted(EVENTS[kind])) or "none"
            out.append((where, f"unknown event {name!r} for {kind} (known: {known})"))

    if isinstance(rule, EventRule):
        waits = []
        if rule.verify is not None:
            for i, name in enumerate(rule.verify.cancel_events):
                event(f"verify.cancel_events[{i}]", rule.kind, name)
                if name in rule.events:
                    out.append((f"verify.cancel_events[{i}]", f"{name!r} both fires and cancels"))
            waits.append(("verify.within", rule.verify.within))
        if rule.persist is not None:
            waits.append(("persist", rule.persist))
        for where, s in waits:
            if rule.signal == "alarm" and s > MAX_ALARM_WAIT_S:
                out.append(
                    (where, f"an alarm may wait at most {MAX_ALARM_WAIT_S:g} s before it pages")
                )
    if isinstance(rule, ComboRule):
        for i, c in enumerate(rule.conditions):
            kind = c.kind or rule.kind
            if rule.scope == "device" and kind != rule.kind:
                out.append((f"conditions[{i}].kind", "a device-scope rule reads its own kind only"))
                continue
            if isinstance(c, LevelCondition):
                metric(f"conditions[{i}].metric", kind, c.metric)
                if (c.above is None) == (c.below is None):
                    out.append((f"conditions[{i}]", "give exactly one of 'above' or 'below'"))
                elif c.clear is not None and (
                    (c.above is not None and c.clear > c.above)
                    or (c.below is not None and c.clear < c.below)
                ):
                    out.append((f"conditions[{i}].clear", "clear level past the trigger"))
            elif isinstance(c, UnchangedCondition):
                metric(f"conditions[{i}].metric", kind, c.metric)
            else:
                event(f"conditions[{i}].event", kind, c.event)
        if rule.scope == "unit" and all(
            (c.kind or rule.kind) == rule.kind for c in rule.conditions
        ):
            out.append(("scope", "unit scope needs a condition on another device kind"))
    return out

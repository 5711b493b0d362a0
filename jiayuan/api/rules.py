"""The rules in force and their backtest, for the console's rules page (managers and admins).

``GET /api/rules`` lists the rules in force as the rule files state them (the console words
them). ``POST /api/rules/backtest`` replays a stretch of the journal through rules tried — a
rule file's text, or the rules in force with a few numbers changed (``changes``: the page's
"what if this threshold were 110?") — and answers per rule and day what they would have
raised beside the rules in force and what the alert store really raised. The replay runs in
the request (a day of the community takes seconds to tens of seconds): one at a time, a second
caller gets 409."""

from __future__ import annotations

import tempfile
import threading
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Self

import yaml
from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from alerts.messages import title
from jiayuan.api.deps import CtxDep, allow, refuse
from jiayuan.api.times import epoch
from jiayuan.backtest import run
from jiayuan.settings import Settings
from rules.model import Rule, RuleFileError, builtin_pack, load_rules, parse_duration

router = APIRouter(
    prefix="/api/rules",
    tags=["rules"],
    dependencies=[allow("manager", "district_manager", "admin")],
)
_busy = threading.Lock()

MAX_DAYS: Final = 31
Level = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=7 * 86_400, allow_inf_nan=False)]
EDITABLE: Final[dict[str, tuple[str, ...]]] = {
    "threshold": ("above", "below", "clear", "for"),
    "count": ("threshold", "window"),
    "absence": ("for",),
    "zone": ("for",),
}
"""The numbers of each rule type a change may set (a baseline rule: its ``baseline.*``)."""
BASELINE_EDITABLE: Final = ("above_by", "below_by", "clear_by")


# ------------------------------------------------------------------ the rules in force


class RuleOut(BaseModel):
    id: str
    type: str
    kind: str
    enabled: bool
    title_zh: str = Field(description="The rule's name as its alerts carry it, in Chinese.")
    title_en: str
    definition: dict[str, JsonValue] = Field(
        description="The rule as its file states it (fields left at their defaults omitted;"
        " durations in seconds)."
    )
    editable: list[str] = Field(
        description="The numbers a backtest's `changes` may set for this rule."
    )


class RulesOut(BaseModel):
    timezone: str = Field(description="The community's time zone (rule time windows, days).")
    rules: list[RuleOut]


def in_force(settings: Settings) -> list[Rule]:
    return load_rules(settings.rules or [builtin_pack()])


def editable(rule: Rule) -> list[str]:
    if rule.type == "threshold" and rule.baseline is not None:
        return [f"baseline.{k}" for k in BASELINE_EDITABLE if getattr(rule.baseline, k) is not None]
    return list(EDITABLE.get(rule.type, ()))


def _definition(rule: Rule) -> dict[str, Any]:
    d: dict[str, Any] = rule.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for key in ("id", "type", "kind"):  # always said, default or not
        d[key] = getattr(rule, key)
    return d


@router.get("", response_model=RulesOut, summary="List the rules in force")
def get_rules(ctx: CtxDep) -> RulesOut:
    return RulesOut(
        timezone=ctx.settings.timezone,
        rules=[
            RuleOut(
                id=r.id,
                type=r.type,
                kind=r.kind,
                enabled=r.enabled,
                title_zh=title(r.id, "zh", r.summary),
                title_en=title(r.id, "en", r.summary),
                definition=_definition(r),
                editable=editable(r),
            )
            for r in in_force(ctx.settings)
        ],
    )


# ------------------------------------------------------------------ backtest


class RuleChange(BaseModel):
    """New numbers for one rule in force; what is left out stays as it is."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    rule_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    above: Level | None = None
    below: Level | None = None
    clear: Level | None = None
    for_: Seconds | None = Field(default=None, alias="for", description="Seconds.")
    threshold: Annotated[int, Field(ge=1, le=10_000)] | None = None
    window: Annotated[Seconds, Field(gt=0)] | None = None
    above_by: Annotated[Level, Field(gt=0)] | None = None
    below_by: Annotated[Level, Field(gt=0)] | None = None
    clear_by: Annotated[Level, Field(ge=0)] | None = None
    enabled: bool | None = None

    def values(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, exclude={"rule_id"})


RULES_MAX_CHARS = 64_000
"""Six times the built-in pack; small enough that a text one past it, even of characters
JSON escapes in 12 bytes, stays under the API's body cap and so gets the 422 that names it."""


class BacktestIn(BaseModel):
    rules: Annotated[str, Field(min_length=1, max_length=RULES_MAX_CHARS)] | None = Field(
        default=None, description="A rule file's text (YAML, the format of the built-in pack)."
    )
    changes: Annotated[list[RuleChange], Field(min_length=1, max_length=50)] | None = Field(
        default=None,
        description="Instead of `rules`: the rules in force with these numbers changed (only"
        " the rules changed are tried).",
    )
    since: datetime = Field(description="RFC 3339 with offset.")
    until: datetime = Field(
        description=f"RFC 3339 with offset; at most {MAX_DAYS} days after since."
    )
    warmup: Annotated[str, Field(max_length=32)] = Field(
        default="6h", description="Replayed before `since`, not counted."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.rules is None) == (self.changes is None):
            raise ValueError("give exactly one of 'rules' (a rule file) or 'changes'")
        return self


class RuleCounts(BaseModel):
    rule_id: str
    tried: int | None = Field(
        description="Alerts the rules tried would have raised (null: not among them)."
    )
    in_force: int | None = Field(description="Alerts the rules in force would have raised.")
    raised: int | None = Field(description="Alerts the alert store really raised.")
    per_day: dict[str, list[int]] = Field(description="Local day → [tried, in force].")
    raised_per_day: dict[str, int] | None = Field(
        default=None, description="Local day → alerts the alert store really raised."
    )


class BacktestOut(BaseModel):
    rows: int = Field(description="Journal rows replayed, the warm-up included.")
    seconds: float
    timezone: str
    days: list[str]
    rules: list[RuleCounts]


def _problems(field: str, lines: list[str], path: Path) -> RequestValidationError:
    return RequestValidationError(
        [
            {"type": "value_error", "loc": ("body", field), "msg": line, "input": None}
            for line in (x.replace(str(path), "rules") for x in lines)
        ]
    )


def _load(text: str, field: str) -> list[Rule]:
    """The rules of a rule file's text, or a 422 naming the rule and field of each problem."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tried.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return load_rules([path])
        except RuleFileError as e:
            raise _problems(field, e.errors, path) from None


def _changed(rules: list[Rule], changes: list[RuleChange]) -> str:
    """The rule file of the rules in force that ``changes`` name, with their new numbers."""
    by_id = {r.id: r for r in rules}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, change in enumerate(changes):
        rule = by_id.get(change.rule_id)
        if rule is None:
            refuse(
                ("body", "changes", str(i), "rule_id"),
                "no rule in force has this id",
                change.rule_id,
            )
        if change.rule_id in seen:
            refuse(
                ("body", "changes", str(i), "rule_id"), "this rule is changed twice", change.rule_id
            )
        seen.add(change.rule_id)
        d = _definition(rule)
        allowed = editable(rule)
        for key, value in change.values().items():
            if key == "enabled":
                d[key] = value
            elif f"baseline.{key}" in allowed:
                d["baseline"] = {**d["baseline"], key: value}
            elif key in allowed:
                d[key] = value
            else:
                refuse(
                    ("body", "changes", str(i), key),
                    f"{rule.id} ({rule.type}) has no {key!r} to change"
                    f" (it has: {', '.join(allowed) or 'none'})",
                    value,
                )
        out.append(d)
    return yaml.safe_dump({"rules": out}, allow_unicode=True, sort_keys=False)


def _window(body: BacktestIn) -> tuple[float, float]:
    if body.since.tzinfo is None or body.until.tzinfo is None:
        refuse(("body", "since"), "since and until must carry an offset (RFC 3339)")
    since, until = epoch(body.since), epoch(body.until)
    assert since is not None and until is not None
    if not 0 < until - since <= MAX_DAYS * 86_400:
        refuse(("body", "until"), f"until must be after since, by at most {MAX_DAYS} days")
    return since, until


@router.post(
    "/backtest",
    response_model=BacktestOut,
    summary="Backtest a rule file, or changed numbers of the rules in force",
    responses={
        409: {"description": "Another backtest is running"},
        503: {"description": "The service has no journal yet"},
    },
)
def post_backtest(ctx: CtxDep, body: BacktestIn) -> BacktestOut:
    since, until = _window(body)
    try:
        warmup = parse_duration(body.warmup)
    except ValueError as e:
        refuse(("body", "warmup"), str(e), body.warmup)
    if warmup > 2 * 86_400:
        refuse(("body", "warmup"), "at most 2 days (2d)", body.warmup)
    if body.changes is not None:
        rules = _load(_changed(in_force(ctx.settings), body.changes), "changes")
    else:
        assert body.rules is not None
        rules = _load(body.rules, "rules")
    if not _busy.acquire(blocking=False):
        raise HTTPException(409, "a backtest is already running; try again when it is done")
    try:
        # one process: forking the service (threads holding locks) is not safe
        report = run(
            ctx.settings, rules, since, until, registry=ctx.registry, warmup_s=warmup, jobs=1,
            journal=ctx.journal, alerts=ctx.alerts.database,
        )  # fmt: skip
    except FileNotFoundError as e:
        raise HTTPException(503, str(e)) from None
    finally:
        _busy.release()
    items: list[RuleCounts] = []
    for rule_id in sorted(set(report.new) | set(report.in_force)):
        new, old = report.new.get(rule_id), report.in_force.get(rule_id)
        n, o = new or Counter[str](), old or Counter[str]()
        actual = report.actual.get(rule_id, Counter[str]()) if report.actual is not None else None
        items.append(
            RuleCounts(
                rule_id=rule_id,
                tried=None if new is None else sum(new.values()),
                in_force=None if old is None else sum(old.values()),
                raised=None if actual is None else sum(actual.values()),
                per_day={d: [n[d], o[d]] for d in report.days if n[d] or o[d]},
                raised_per_day=None
                if actual is None
                else {d: actual[d] for d in report.days if actual[d]},
            )
        )
    return BacktestOut(
        rows=report.rows,
        seconds=round(report.seconds, 2),
        timezone=ctx.settings.timezone,
        days=report.days,
        rules=items,
    )

"""``POST /api/rules/backtest``: what a rule file would have raised over a stretch of the
journal, per rule and day, beside the rules in force (for the console's rules page; managers
and admins). The replay runs in the request (a day of the community takes seconds to tens of
seconds): one at a time, a second caller gets 409."""

from __future__ import annotations

import tempfile
import threading
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from jiayuan.api.deps import CtxDep, allow, refuse
from jiayuan.api.times import epoch
from jiayuan.backtest import run
from rules.model import RuleFileError, load_rules, parse_duration

router = APIRouter(prefix="/api/rules", tags=["rules"], dependencies=[allow("manager", "admin")])
_busy = threading.Lock()


class BacktestIn(BaseModel):
    rules: Annotated[str, Field(min_length=1, max_length=200_000)] = Field(
        description="A rule file's text (YAML, the format of the built-in pack)."
    )
    since: datetime = Field(description="RFC 3339 with offset.")
    until: datetime = Field(description="RFC 3339 with offset; at most 31 days after since.")
    warmup: str = Field(default="6h", description="Replayed before `since`, not counted.")


class RuleCounts(BaseModel):
    rule_id: str
    tried: int | None = Field(
        description="Alerts the file tried would have raised (null: not in it)."
    )
    in_force: int | None = Field(description="Alerts the rules in force would have raised.")
    raised: int | None = Field(description="Alerts the alert store really raised.")
    per_day: dict[str, list[int]] = Field(description="Local day → [tried, in force].")


class BacktestOut(BaseModel):
    rows: int = Field(description="Journal rows replayed, the warm-up included.")
    seconds: float
    days: list[str]
    rules: list[RuleCounts]


@router.post(
    "/backtest",
    response_model=BacktestOut,
    summary="Backtest a rule file",
    responses={
        409: {"description": "Another backtest is running"},
        503: {"description": "The service has no journal yet"},
    },
)
def post_backtest(ctx: CtxDep, body: BacktestIn) -> BacktestOut:
    since, until = epoch(body.since), epoch(body.until)
    assert since is not None and until is not None
    if body.since.tzinfo is None or body.until.tzinfo is None:
        refuse(("body", "since"), "since and until must carry an offset (RFC 3339)")
    if not 0 < until - since <= 31 * 86_400:
        refuse(("body", "until"), "until must be after since, by at most 31 days")
    try:
        warmup = parse_duration(body.warmup)
    except ValueError as e:
        refuse(("body", "warmup"), str(e), body.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tried.yaml"
        path.write_text(body.rules, encoding="utf-8")
        try:
            rules = load_rules([path])
        except RuleFileError as e:
            raise RequestValidationError(
                [
                    {"type": "value_error", "loc": ("body", "rules"), "msg": line, "input": None}
                    for line in (x.replace(str(path), "rules") for x in e.errors)
                ]
            ) from None
    if not _busy.acquire(blocking=False):
        raise HTTPException(409, "a backtest is already running; try again when it is done")
    try:
        # one process: forking the service (threads holding locks) is not safe
        report = run(
            ctx.settings, rules, since, until, registry=ctx.registry, warmup_s=warmup, jobs=1
        )
    except FileNotFoundError as e:
        raise HTTPException(503, str(e)) from None
    finally:
        _busy.release()
    items: list[RuleCounts] = []
    for rule_id in sorted(set(report.new) | set(report.in_force)):
        new, old = report.new.get(rule_id), report.in_force.get(rule_id)
        n, o = new or Counter[str](), old or Counter[str]()
        actual = report.actual.get(rule_id) if report.actual is not None else None
        items.append(
            RuleCounts(
                rule_id=rule_id,
                tried=None if new is None else sum(new.values()),
                in_force=None if old is None else sum(old.values()),
                raised=None if actual is None else sum(actual.values()),
                per_day={d: [n[d], o[d]] for d in report.days if n[d] or o[d]},
            )
        )
    return BacktestOut(
        rows=report.rows, seconds=round(report.seconds, 2), days=report.days, rules=items
    )

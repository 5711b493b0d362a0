"""Dependencies shared by the resource modules: the context, paging, time ranges, and the one
way to refuse a query parameter in FastAPI's own 422 shape."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime

from alerts import AlertStore
from ingest.journal import Journal
from jiayuan.context import AppContext

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def get_alerts(request: Request) -> AlertStore:
    return get_ctx(request).alerts


def get_journal(request: Request) -> Journal:
    return get_ctx(request).journal


CtxDep = Annotated[AppContext, Depends(get_ctx)]
AlertsDep = Annotated[AlertStore, Depends(get_alerts)]
JournalDep = Annotated[Journal, Depends(get_journal)]

Limit = Annotated[int, Query(ge=1, le=500, description="Page size, 1–500.")]
Offset = Annotated[int, Query(ge=0, description="Items to skip.")]
Since = Annotated[
    AwareDatetime | None,
    Query(description="Inclusive lower bound, RFC 3339 with an offset (Z or +08:00)."),
]
Until = Annotated[
    AwareDatetime | None,
    Query(description="Exclusive upper bound, RFC 3339 with an offset (Z or +08:00)."),
]


def refuse(where: tuple[str, ...], msg: str, value: Any = None) -> NoReturn:
    """Raise a 422 that names the parameter, in the same shape as FastAPI's own."""
    raise RequestValidationError(
        [{"type": "value_error", "loc": where, "msg": msg, "input": value}]
    )


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        refuse(("query", "until"), "until must be later than since", until.isoformat())

"""A 422 for every request body the models refuse, whatever it held; a 503 for every request
that finds the PostgreSQL database out of reach.

FastAPI reads request bodies with the standard library's JSON parser, which takes the
non-JSON literals ``NaN``, ``Infinity`` and ``-Infinity``; the default 422 handler then puts
the refused input back into its answer and fails to render it (strict JSON has no infinity),
answering 500. :func:`install` renders such inputs as the strings ``"inf"``/``"nan"``.

On PostgreSQL every request reads the shared stores (a push its integration's token, a staff
request its session or token, then alerts): while the database is away that raised
``psycopg.OperationalError`` (or the pool's ``PoolTimeout``, one of them) and was answered 500
with a traceback in the log. It is answered 503 with ``Retry-After``, as ``/healthz`` says
"database unreachable", and logged as one line without the server's address.

A request waits at most :data:`district.pg.REQUEST_WAIT_S` for a connection of a pool (the
background workers wait 30 s): a pool whose connections the outage broke answers a console's
request 503 within seconds. A session or token looked up before the routes (the security
middleware) that meets the outage is answered the same 503, not 500."""

from __future__ import annotations

import logging
import math
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from district.pg import REQUEST_WAIT_S, patience


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        status_code=422, content={"detail": _finite(jsonable_encoder(exc.errors()))}
    )


RETRY_AFTER_S = 5
log = logging.getLogger(__name__)


def _unavailable(method: str, path: str, exc: psycopg.OperationalError) -> JSONResponse:
    log.warning(
        "%s %s: the database cannot be reached (%s); answered 503",
        method,
        path,
        type(exc).__name__,
    )
    return JSONResponse(
        status_code=503,
        content={"detail": "the database cannot be reached now; try again shortly"},
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _database_away(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, psycopg.OperationalError)
    return _unavailable(request.method, request.url.path, exc)


class RequestPatience:
    """Outermost: every HTTP request waits at most :data:`REQUEST_WAIT_S` for a database
    connection, and the database out of reach before the routes is a 503 too (after the
    answer has begun, a stream's, it is left to end the connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        with patience(REQUEST_WAIT_S):
            try:
                await self.app(scope, receive, watched)
            except psycopg.OperationalError as e:
                if started:
                    raise
                answer = _unavailable(scope["method"], scope["path"], e)
                await answer(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _refused)
    app.add_exception_handler(psycopg.OperationalError, _database_away)
    app.add_middleware(RequestPatience)

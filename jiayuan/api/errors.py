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
"database unreachable", and logged as one line without the server's address."""

from __future__ import annotations

import logging
import math
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


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


async def _database_away(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, psycopg.OperationalError)
    log.warning(
        "%s %s: the database cannot be reached (%s); answered 503",
        request.method,
        request.url.path,
        type(exc).__name__,
    )
    return JSONResponse(
        status_code=503,
        content={"detail": "the database cannot be reached now; try again shortly"},
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _refused)
    app.add_exception_handler(psycopg.OperationalError, _database_away)

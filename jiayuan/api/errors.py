"""A 422 for every request body the models refuse, whatever it held.

FastAPI reads request bodies with the standard library's JSON parser, which takes the
non-JSON literals ``NaN``, ``Infinity`` and ``-Infinity``; the default 422 handler then puts
the refused input back into its answer and fails to render it (strict JSON has no infinity),
answering 500. :func:`install` renders such inputs as the strings ``"inf"``/``"nan"``."""

from __future__ import annotations

import math
from typing import Any

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


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _refused)

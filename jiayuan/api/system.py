"""``/healthz`` and ``/metrics``: for the operators' probes and Prometheus.

``/healthz`` needs no credentials (a probe has none; it tells only whether the parts run, never
a path, a command or what one said); ``GET /api/health`` (admins, operators) adds those.
``/metrics`` needs a bearer token of an admin or an operator: Prometheus sends one with
``authorization: {credentials_file: ...}`` in its scrape config (README)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from jiayuan.api.deps import CtxDep, allow
from jiayuan.registry_admin import BROKER_PROBLEM

log = logging.getLogger(__name__)

router = APIRouter(tags=["system"])


@router.get(
    "/healthz",
    summary="Health of the service's parts",
    responses={200: {"description": "All parts ok"}, 503: {"description": "A part is not ok"}},
)
def get_health(ctx: CtxDep) -> JSONResponse:
    """The live state of the parts (MQTT session, ingest, …). 200 when `status` is `ok`,
    503 otherwise."""
    try:
        health: dict[str, Any] = ctx.health()
    except Exception:
        log.exception("health check failed")
        health = {"status": "error", "detail": "the health check itself failed"}
    code = 200 if health.get("status") == "ok" else 503
    return JSONResponse(health, status_code=code)


@router.get(
    "/api/health",
    summary="Health of the service's parts, with details",
    dependencies=[allow("admin", "operator")],
)
def get_health_details(ctx: CtxDep) -> JSONResponse:
    """As `/healthz` (always 200), with what the public probe does not show: where the registry
    is kept, how the broker is reloaded and what its reload said."""
    try:
        health: dict[str, Any] = ctx.health()
    except Exception:
        log.exception("health check failed")
        health = {"status": "error", "detail": "the health check itself failed"}
    if ctx.registry_admin is not None:
        details = ctx.registry_admin.details()
        health["registry"] = details
        if details["broker_problem"]:
            health["problems"] = [
                details["broker_problem"] if p == BROKER_PROBLEM else p
                for p in health.get("problems", [])
            ]
    return JSONResponse(health)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    dependencies=[allow("admin", "operator")],
)
def get_metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

"""``/healthz`` and ``/metrics``: for the operators' probes and Prometheus.

``/healthz`` needs no credentials (a probe has none; it tells only whether the parts run).
``/metrics`` needs a bearer token of an admin or an operator: Prometheus sends one with
``authorization: {credentials_file: ...}`` in its scrape config (README)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from jiayuan.api.deps import CtxDep, allow

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
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    dependencies=[allow("admin", "operator")],
)
def get_metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

"""The HTTP API: :func:`create_app` builds it over a running service's :class:`AppContext`.

It starts nothing of the service (MQTT, ingest, rules, scheduler): the service does, and runs
this app with uvicorn. The lifespan only attaches the live stream's broadcaster to the loop.

Staff access: :class:`jiayuan.api.security.SecurityMiddleware` authenticates every request
(deny by default), and every route declares who may use it with
:func:`jiayuan.api.deps.allow` — an app with a route that declares nothing is not built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.routing import Route

from jiayuan import console
from jiayuan.api import (
    alerts,
    audit,
    auth,
    baselines,
    commissioning,
    dead_letters,
    devices,
    duty,
    escalation,
    fleet,
    imports,
    incidents,
    ops,
    push,
    registry,
    registry_changes,
    residents,
    review,
    rules,
    silences,
    stream,
    system,
)
from jiayuan.api.bodylimit import LOGIN_MAX_BODY, BodyLimitMiddleware
from jiayuan.api.bounds import known_query
from jiayuan.api.deps import access_of
from jiayuan.api.errors import install as install_error_handlers
from jiayuan.api.openapi import document_errors
from jiayuan.api.security import SecurityMiddleware, is_public
from jiayuan.api.stream import Broadcaster
from jiayuan.auth.authn import Authenticator
from jiayuan.auth.store import installed
from jiayuan.context import AppContext


def create_app(
    ctx: AppContext,
    *,
    stream_queue_size: int = 256,
    keepalive_s: float = 15.0,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The API over ``ctx``. ``app.state.broadcaster.close()`` (thread-safe) ends the live
    streams; call it before asking uvicorn to exit, which otherwise waits for them.
    ``app.state.auth`` is the :class:`Authenticator` (``ctx.auth``'s store, or ``auth.db`` in
    the data directory)."""
    broadcaster = Broadcaster(ctx.alerts, queue_size=stream_queue_size, keepalive_s=keepalive_s)
    if ctx.auth is None:
        ctx.auth = installed(ctx.settings)
    authn = authenticator or Authenticator(ctx.settings, ctx.auth, ctx.registry)
    if ctx.registry_admin is not None:
        ctx.registry_admin.subscribe("staff access", authn.set_registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broadcaster.start()
        try:
            yield
        finally:
            broadcaster.close()

    app = FastAPI(
        title="jiayuan",
        summary="Sensor ingestion and alerting for a residential community",
        version="0.1.0",
        lifespan=lifespan,
        redoc_url=None,
        swagger_ui_parameters={"persistAuthorization": False},
        dependencies=[Depends(known_query)],
    )
    app.state.ctx = ctx
    app.state.auth = authn
    app.state.broadcaster = broadcaster
    app.include_router(commissioning.router)  # before devices: /api/devices/unregistered
    for module in (system, devices, alerts, dead_letters, stream, registry, residents, ops, fleet):
        app.include_router(module.router)
    for module in (silences, escalation):  # alerting: silences, chains, timers, deliveries
        app.include_router(module.router)
    for module in (incidents, duty, review):  # incidents, duty coverage, the weekly review
        app.include_router(module.router)
    for module in (baselines, rules):  # personal baselines; rule backtests
        app.include_router(module.router)
    app.include_router(registry_changes.router)  # the registry changed while running
    app.include_router(imports.router)  # spreadsheet imports: a diff, then apply
    app.include_router(auth.router)
    app.include_router(push.router)  # device platforms, with their integration's own token
    app.include_router(audit.router)
    app.include_router(console.router)
    check_access(app)
    if ctx.settings.cors_origins:  # closed unless origins are named; never with the cookie
        app.add_middleware(
            CORSMiddleware,
            allow_origins=ctx.settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(SecurityMiddleware, auth=authn)
    # outermost: a body past its cap is refused before anything reads it, signed in or not
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=ctx.settings.http_max_body_bytes,
        body_timeout_s=ctx.settings.http_body_timeout_s,
        per_path={"/api/auth/login": LOGIN_MAX_BODY, imports.PATH: imports.MAX_BODY},
        per_prefix={push.PREFIX: ctx.settings.push_max_body_bytes},
    )
    install_error_handlers(app)
    document_errors(app)
    return app


def served_routes(app: FastAPI) -> list[tuple[str, set[str], Dependant | None]]:
    """Every route the app serves as (path, methods, dependant with the routers' own
    dependencies), routes of included routers too (FastAPI ≥ 0.13x keeps those inside an
    included-router object of its own rather than copying them into ``app.routes``)."""
    out: list[tuple[str, set[str], Dependant | None]] = []
    for r in app.routes:
        contexts = getattr(r, "effective_route_contexts", None)
        if contexts is not None:
            out += [(c.path, set(c.methods or ()), c.dependant) for c in contexts()]
        elif isinstance(r, APIRoute):
            out.append((r.path, set(r.methods or ()), r.dependant))
        elif isinstance(r, Route):
            out.append((r.path, set(r.methods or ()), None))
    return out


def check_access(app: FastAPI) -> None:
    """Refuse an app with a route (other than the public ones) that says nothing of who may
    use it. Routes without a dependant (FastAPI's docs) are left to the middleware: any
    signed-in person."""
    silent = [
        f"{sorted(methods)} {path}"
        for path, methods, dependant in served_routes(app)
        if dependant is not None and not is_public(path) and not _declares(dependant)
    ]
    if silent:
        raise RuntimeError(
            "routes without an access rule (jiayuan.api.deps.allow): " + ", ".join(silent)
        )


def _declares(d: Dependant) -> bool:
    call: Callable[..., Any] | None = d.call
    return (call is not None and access_of(call) is not None) or any(
        _declares(sub) for sub in d.dependencies
    )

"""The HTTP API: :func:`create_app` builds it over a running service's :class:`AppContext`.

It starts nothing of the service (MQTT, ingest, rules, scheduler): the service does, and runs
this app with uvicorn. The lifespan only attaches the live stream's broadcaster to the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from jiayuan import console
from jiayuan.api import (
    alerts,
    dead_letters,
    devices,
    escalation,
    fleet,
    ops,
    registry,
    residents,
    silences,
    stream,
    system,
)
from jiayuan.api.stream import Broadcaster
from jiayuan.context import AppContext


def create_app(
    ctx: AppContext, *, stream_queue_size: int = 256, keepalive_s: float = 15.0
) -> FastAPI:
    """The API over ``ctx``. ``app.state.broadcaster.close()`` (thread-safe) ends the live
    streams; call it before asking uvicorn to exit, which otherwise waits for them."""
    broadcaster = Broadcaster(ctx.alerts, queue_size=stream_queue_size, keepalive_s=keepalive_s)

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
    )
    app.state.ctx = ctx
    app.state.broadcaster = broadcaster
    for module in (system, devices, alerts, dead_letters, stream, registry, residents, ops, fleet):
        app.include_router(module.router)
    for module in (silences, escalation):  # alerting: silences, chains, timers, deliveries
        app.include_router(module.router)
    app.include_router(console.router)
    return app

"""Serving the API with uvicorn so that a shutdown does not wait for live-stream clients, and
within the HTTP limits of the settings (``http_*``: see :mod:`jiayuan.api.connections`).

uvicorn stops by waiting for every open response to finish, and a live stream never does:
:class:`ApiServer` ends the streams first (their clients reconnect to the next instance with
``Last-Event-ID`` and miss nothing), and a grace period cuts whatever still hangs.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from fastapi import FastAPI

from jiayuan.api.connections import (
    ACCEPT_BACKLOG,
    ConnectionGuard,
    CountInvalidRequests,
    fit_open_files,
    guarded_protocol,
    quiet_accept_errors,
)
from jiayuan.api.stream import Broadcaster
from jiayuan.logmetrics import count_errors
from jiayuan.settings import Settings


class ApiServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, broadcaster: Broadcaster, guard: ConnectionGuard
    ) -> None:
        super().__init__(config)
        self.broadcaster = broadcaster
        self.guard = guard
        self.invalid = CountInvalidRequests(guard.shed)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        quiet_accept_errors(asyncio.get_running_loop(), self.guard.shed)
        logging.getLogger("uvicorn.error").addFilter(self.invalid)
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.broadcaster.close()
        await super().shutdown(sockets)
        logging.getLogger("uvicorn.error").removeFilter(self.invalid)
        self.guard.shed.flush()


def make_server(
    app: FastAPI,
    host: str,
    port: int,
    *,
    log_level: str = "warning",
    timeout_graceful_shutdown: int = 5,
) -> ApiServer:
    """A uvicorn server for ``app`` (from :func:`jiayuan.api.create_app`), with the HTTP limits
    of its settings. ``run()`` it in the main thread (it handles SIGINT/SIGTERM), or in a
    thread and set ``should_exit`` to stop."""
    settings: Settings = app.state.ctx.settings
    guard = ConnectionGuard(
        max_connections=fit_open_files(settings.http_max_connections),
        header_timeout_s=settings.http_header_timeout_s,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(guard),
        backlog=ACCEPT_BACKLOG,
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        timeout_keep_alive=settings.http_keepalive_s,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        # X-Forwarded-For is not believed (uvicorn trusts it from 127.0.0.1 by default): the
        # client's address is the one in the audit trail and the sign-in limits
        proxy_headers=False,
        server_header=False,
    )
    count_errors("uvicorn")  # after the config, which replaces uvicorn's loggers' handlers
    broadcaster: Broadcaster = app.state.broadcaster
    return ApiServer(config, broadcaster, guard)

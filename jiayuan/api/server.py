"""Serving the API with uvicorn so that a shutdown does not wait for live-stream clients.

uvicorn stops by waiting for every open response to finish, and a live stream never does:
:class:`ApiServer` ends the streams first (their clients reconnect to the next instance with
``Last-Event-ID`` and miss nothing), and a grace period cuts whatever still hangs.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from jiayuan.api.stream import Broadcaster


class ApiServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, broadcaster: Broadcaster) -> None:
        super().__init__(config)
        self.broadcaster = broadcaster

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.broadcaster.close()
        await super().shutdown(sockets)


def make_server(
    app: FastAPI,
    host: str,
    port: int,
    *,
    log_level: str = "warning",
    timeout_graceful_shutdown: int = 5,
) -> ApiServer:
    """A uvicorn server for ``app`` (from :func:`jiayuan.api.create_app`). ``run()`` it in the
    main thread (it handles SIGINT/SIGTERM), or in a thread and set ``should_exit`` to stop."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        # X-Forwarded-For is not believed (uvicorn trusts it from 127.0.0.1 by default): the
        # client's address is the one in the audit trail and the sign-in limits
        proxy_headers=False,
        server_header=False,
    )
    broadcaster: Broadcaster = app.state.broadcaster
    return ApiServer(config, broadcaster)

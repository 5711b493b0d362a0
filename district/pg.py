"""Connections to the district's PostgreSQL: one place for the options every one of them needs.

TCP keepalives matter here, not for performance: a lease is renewed over one of these
connections, and an instance cut off from the database must notice within seconds (its
``tcp_user_timeout`` makes a write that is not acknowledged fail) rather than after the kernel's
two hours. The server side has the same settings (``tcp_keepalives_*``,
``client_connection_check_interval``): docs/district.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from district.migrate import migrate

CONNECT_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms: unacknowledged writes fail after 10 s
    "connect_timeout": 10,
}

Connection = psycopg.Connection[TupleRow]


def connect(url: str, *, name: str = "jiayuan", autocommit: bool = False) -> Connection:
    """One connection to ``url`` (``application_name`` ``name``: pg_stat_activity shows which
    instance holds which session)."""
    return psycopg.connect(url, autocommit=autocommit, application_name=name, **CONNECT_OPTIONS)


RECONNECT_S = 10.0
"""How long a pool retries one lost connection (a doubling backoff) before it gives that attempt
up; the next request for a connection starts afresh. With psycopg_pool's default, 5 minutes, the
backoff outgrew the outage: after 90 s without the database, the session slots came back 29 s
and the rules worker's partitions 35 s after it did (a fall pushed then was alerted 41 s after);
with 10 s, 4 s and 15 s."""


POOL_WAIT_S = 30.0
"""How long the background workers (ingest, rules, dispatch, retention) wait for a pool's
connection before :class:`psycopg_pool.PoolTimeout`: psycopg_pool's default. Their work waits
for the database anyway; a request does not (:func:`patience`)."""
REQUEST_WAIT_S = 4.0
"""How long an HTTP request waits for a connection (:func:`patience`, set by
``jiayuan.api.errors``) before it is answered 503: while the database is away, a person at the
console is told within seconds rather than after the workers' 30."""

_WAIT_S: ContextVar[float | None] = ContextVar("pool_wait_s", default=None)


@contextmanager
def patience(seconds: float) -> Iterator[None]:
    """Within this block (this thread or task, and what it hands to worker threads with its
    context: ``anyio.to_thread``), every pool of :func:`open_pool` waits at most ``seconds`` for
    a connection when its caller names no timeout."""
    token = _WAIT_S.set(seconds)
    try:
        yield
    finally:
        _WAIT_S.reset(token)


class Pool(ConnectionPool[Connection]):
    """A pool whose wait for a connection is the caller's :func:`patience`, when it has one."""

    def getconn(self, timeout: float | None = None) -> Connection:
        return super().getconn(_WAIT_S.get() if timeout is None else timeout)


def open_pool(
    url: str, *, name: str = "jiayuan", min_size: int = 1, max_size: int = 8
) -> ConnectionPool:
    """Migrate the database to this version's schema, then a pool of connections to it (open,
    its first connection made: a wrong URL fails here, not at the first query).

    Each connection is checked as it is handed out (an empty query, one round trip): one the
    server ended while it sat idle in the pool (a restart, an outage) is replaced there, rather
    than failing the request or batch that drew it. Without the check, the first requests
    after the database came back were answered 503."""
    with connect(url, name=name) as db:
        migrate(db)
    pool = Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"application_name": name, **CONNECT_OPTIONS},
        name=name,
        open=False,
        reconnect_timeout=RECONNECT_S,
        timeout=POOL_WAIT_S,
        check=Pool.check_connection,
    )
    pool.open(wait=True, timeout=30)
    return pool

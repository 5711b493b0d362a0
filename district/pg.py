"""Connections to the district's PostgreSQL: one place for the options every one of them needs.

TCP keepalives matter here, not for performance: a lease is renewed over one of these
connections, and an instance cut off from the database must notice within seconds (its
``tcp_user_timeout`` makes a write that is not acknowledged fail) rather than after the kernel's
two hours. The server side has the same settings (``tcp_keepalives_*``,
``client_connection_check_interval``): docs/district.md.
"""

from __future__ import annotations

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


def open_pool(
    url: str, *, name: str = "jiayuan", min_size: int = 1, max_size: int = 8
) -> ConnectionPool:
    """Migrate the database to this version's schema, then a pool of connections to it (open,
    its first connection made: a wrong URL fails here, not at the first query)."""
    with connect(url, name=name) as db:
        migrate(db)
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"application_name": name, **CONNECT_OPTIONS},
        name=name,
        open=False,
        reconnect_timeout=RECONNECT_S,
    )
    pool.open(wait=True, timeout=30)
    return pool

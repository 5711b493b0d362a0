"""What a store's two schemas must agree on: the same tables with the same columns in its SQLite
DDL and in its PostgreSQL migration (district/migrations/), which are kept apart on purpose
(types, keys and indexes differ by dialect). One reading of both, for every store's test:

    lite = columns(sqlite_db)
    assert columns(pg_db, lite) == lite
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from base.sql import Db

_SQLITE_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"


def columns(db: Db, tables: Iterable[str] | None = None) -> dict[str, set[str]]:
    """``tables`` (every table but SQLite's own when None) and their columns, as they are on
    ``db``: a ``sqlite3.Connection``, or a :class:`base.sql.PgDb` (the current schema). A table
    that does not exist there is not in the answer."""
    if isinstance(db, sqlite3.Connection):
        if tables is None:
            tables = [r[0] for r in db.execute(_SQLITE_TABLES)]
        found = {t: {r[1] for r in db.execute(f"PRAGMA table_info({t})")} for t in tables}
        return {t: c for t, c in found.items() if c}
    if tables is None:
        raise ValueError("name the tables to read from PostgreSQL (those of the SQLite side)")
    pg: dict[str, set[str]] = {}
    for table, column in db.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ANY(?)",
        (list(tables),),
    ):
        pg.setdefault(table, set()).add(column)
    return pg

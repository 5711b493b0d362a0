"""One way for a store to run its SQL on SQLite or PostgreSQL (psycopg 3).

A store written against :class:`Db` runs the same statements on both: on SQLite the connection
is the ``sqlite3.Connection`` itself (nothing in between, nothing slower); on PostgreSQL it is
a :class:`PgDb`, which takes the SQLite placeholders (``?``, ``?1``, ``:name``) and gives rows
by name and by position, as ``sqlite3.Row`` does. What the SQL itself must keep to, so that one
text runs on both:

- ``INSERT … ON CONFLICT … DO NOTHING`` (not ``INSERT OR IGNORE``), and ``… RETURNING id``
  for a new row's id (:func:`insert_id`; SQLite ≥ 3.35), never ``lastrowid``;
- ``CASE WHEN a < b THEN a ELSE b END`` for a two-argument ``min``/``max`` (SQLite has no
  ``LEAST``, PostgreSQL no scalar ``min``);
- booleans as integer columns (``0``/``1``) and conditions that are booleans (``1 = 0``, not
  ``0``);
- ``json_extract(column, '$.key')`` with a plain column and key only (PostgreSQL gets
  ``(column::jsonb ->> 'key')``); no other JSON function, no ``PRAGMA`` or date functions:
  decode JSON in Python, or branch on :func:`dialect` where a store's schema differs (its DDL
  lives apart per dialect anyway);
- a row read to decide a write is read with :func:`for_update` (PostgreSQL's transactions do
  not serialise writers as SQLite's ``BEGIN IMMEDIATE`` does).

``sum``/``avg`` of numbers come back as ``float`` on PostgreSQL (not ``Decimal``).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol

import psycopg
from psycopg.adapt import Loader
from psycopg.rows import RowMaker

Dialect = Literal["sqlite", "postgresql"]


class Row(Protocol):
    """A row by column name or position (``sqlite3.Row``, :class:`PgRow`)."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def keys(self) -> list[str]: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """A connection a store's SQL runs on: ``sqlite3.Connection`` or :class:`PgDb`."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...


def dialect(db: Db) -> Dialect:
    return "sqlite" if isinstance(db, sqlite3.Connection) else "postgresql"


def for_update(db: Db) -> str:
    """`` FOR UPDATE`` on PostgreSQL, nothing on SQLite: a row read to decide a write in the same
    transaction, locked so that another instance's transaction deciding the same waits and then
    reads the outcome (SQLite's ``BEGIN IMMEDIATE`` already serialises every writer)."""
    return "" if isinstance(db, sqlite3.Connection) else " FOR UPDATE"


def is_postgresql(where: object) -> bool:
    """Whether a store's location (a path, or a URL) names a PostgreSQL database."""
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


def insert_id(db: Db, sql: str, parameters: Any = ()) -> int | None:
    """Run ``INSERT …`` with ``RETURNING id``: the new row's id, or None when ``ON CONFLICT …
    DO NOTHING`` inserted nothing."""
    rows = db.execute(f"{sql} RETURNING id", parameters).fetchall()
    return int(rows[0][0]) if rows else None


class PgRow:
    """A PostgreSQL row by name or position (what ``sqlite3.Row`` gives on SQLite)."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: Mapping[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, key: int | str, /) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._index, self._values, strict=True))!r})"


def _rows(cursor: Any) -> RowMaker[PgRow]:
    index = {d.name: i for i, d in enumerate(cursor.description or ())}
    return lambda values: PgRow(index, values)


class _FloatLoader(Loader):
    """``numeric`` (what ``sum`` of integers and ``avg`` give) as ``float``, as on SQLite."""

    def load(self, data: Any) -> float:
        return float(bytes(data))


_JSON_EXTRACT = re.compile(r"json_extract\(\s*([A-Za-z_][\w.]*)\s*,\s*'\$\.([A-Za-z_]\w*)'\s*\)")
"""SQLite's ``json_extract(column, '$.key')``: PostgreSQL's ``column::jsonb ->> 'key'``."""
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|\?(\d*)|(?<!:):([A-Za-z_]\w*)|%")


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> tuple[str, tuple[int, ...] | None]:
    """SQLite's placeholders as psycopg's: ``?`` → ``%s``, ``:name`` → ``%(name)s``, and
    ``?N`` → ``%s`` with the order of the arguments to pass (0-based), ``%`` → ``%%``. Quoted
    text is left alone."""
    order: list[int] = []
    numbered = False

    def one(m: re.Match[str]) -> str:
        nonlocal numbered
        text = m.group(0)
        if text[0] in "'\"":
            return text.replace("%", "%%")
        if text == "%":
            return "%%"
        if text[0] == "?":
            if m.group(1):
                numbered = True
                order.append(int(m.group(1)) - 1)
            else:
                order.append(len(order))
            return "%s"
        return f"%({m.group(2)})s"

    out = _TOKENS.sub(one, _JSON_EXTRACT.sub(r"(\1::jsonb ->> '\2')", sql))
    return out, (tuple(order) if numbered else None)


def _args(order: tuple[int, ...] | None, parameters: Any) -> Any:
    if order is None or isinstance(parameters, Mapping):
        return parameters
    return [parameters[i] for i in order]


class PgDb:
    """A psycopg connection with :class:`Db`'s interface (SQLite's placeholders, rows by name).

    Not a transaction manager: the connection's owner (a pool's ``connection()``, a
    ``transaction()``) decides when it commits."""

    dialect: Dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        conn.adapters.register_loader("numeric", _FloatLoader)

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[PgRow]:
        text, order = translate(sql)
        cur = self.conn.cursor(row_factory=_rows)
        return cur.execute(text, _args(order, parameters))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[PgRow]:
        text, order = translate(sql)
        cur = self.conn.cursor(row_factory=_rows)
        cur.executemany(text, [_args(order, p) for p in parameters])
        return cur

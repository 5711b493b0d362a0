"""Where a service test's journal and alert store are: SQLite files in its data directory (the
default), or one PostgreSQL database (``JIAYUAN_DATABASE_URL``). The ``stores`` fixture
(tests/conftest.py) gives one of each, so an integration test runs once per backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from base.datadir import DataDir
from district.pg import connect


class Stores:
    """``url`` None: SQLite files of the service's data directory; else that database."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url

    @property
    def name(self) -> str:
        return "sqlite" if self.url is None else "postgresql"

    @property
    def settings(self) -> dict[str, Any]:
        """ServiceProcess's settings for these stores."""
        return {} if self.url is None else {"database_url": self.url}

    def journal(self, data_dir: Path, query: str) -> int:
        """One integer from the journal (SQL both accept; 0 while its tables do not exist)."""
        return self._count(DataDir(data_dir).journal, query)

    def journal_rows(self, data_dir: Path, query: str) -> list[tuple[Any, ...]]:
        """The rows of a query of the journal (SQL both accept; none while its tables do not
        exist)."""
        if self.url is None:
            file = DataDir(data_dir).journal
            db = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
            try:
                return [tuple(r) for r in db.execute(query).fetchall()]
            except sqlite3.OperationalError:  # not created yet
                return []
            finally:
                db.close()
        try:
            with connect(self.url, autocommit=True) as pg:
                return [tuple(r) for r in pg.execute(query).fetchall()]
        except psycopg.errors.UndefinedTable:  # not migrated yet
            return []

    def alerts(self, data_dir: Path, query: str) -> int:
        """One integer from the alert store, as :meth:`journal`."""
        return self._count(DataDir(data_dir).alerts, query)

    def _count(self, file: Path, query: str) -> int:
        if self.url is None:
            db = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
            try:
                return int(db.execute(query).fetchone()[0] or 0)
            except sqlite3.OperationalError:  # not created yet
                return 0
            finally:
                db.close()
        try:
            with connect(self.url, autocommit=True) as pg:
                row = pg.execute(query).fetchone()
        except psycopg.errors.UndefinedTable:  # not migrated yet
            return 0
        return int(row[0] or 0) if row else 0

"""The throwaway PostgreSQL of the tests (devtools/postgres.py): made, served, removed."""

from __future__ import annotations

import socket

import psycopg
import pytest

from devtools.postgres import Postgres


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_a_cluster_serves_databases_and_leaves_nothing_behind() -> None:
    pg = Postgres().start()
    root = pg.root
    assert root is not None and (root / "data" / "PG_VERSION").exists()
    try:
        url = pg.create_database("one")
        with psycopg.connect(url) as db:
            db.execute("CREATE TABLE t (x int)")
            db.execute("INSERT INTO t VALUES (1), (2)")
            db.commit()
            assert db.execute("SELECT sum(x) FROM t").fetchone() == (3,)
        assert url.startswith("postgresql://jiayuan@127.0.0.1:")
    finally:
        pg.stop()
    assert not root.exists()
    assert not _listening(pg.host, pg.port)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.url(), connect_timeout=2)


def test_each_test_has_a_database_of_its_own(pg_url: str, postgres: Postgres) -> None:
    with psycopg.connect(pg_url) as db:
        name = db.execute("SELECT current_database()").fetchone()
        assert name is not None and name[0] in pg_url
        tables = db.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
    assert pg_url != postgres.url()

"""The district's migrations (district/migrate.py) against the real throwaway PostgreSQL."""

from __future__ import annotations

import threading

import psycopg
import pytest

from district.migrate import Migration, MigrationError, migrate, migrations


def test_the_schema_is_made_once_and_then_left_alone(pg_url: str) -> None:
    with psycopg.connect(pg_url) as db:
        first = migrate(db)
        again = migrate(db)
        tables = {
            r[0]
            for r in db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        }
    assert first[:2] == ["0001_leases_claims", "0002_follower_cursors"]
    assert first == [f"{m.version:04d}_{m.name}" for m in migrations()]
    assert again == []
    assert {"schema_migrations", "instances", "leases", "work_items", "follower_cursors"} <= tables


def test_instances_starting_together_migrate_once(pg_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with psycopg.connect(pg_url) as db:
                results.append(migrate(db))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    every = [f"{m.version:04d}_{m.name}" for m in migrations()]
    assert sorted(results) == [[], [], [], every]


def test_a_changed_or_unknown_migration_stops_the_start(pg_url: str) -> None:
    shipped = migrations()
    with psycopg.connect(pg_url) as db:
        migrate(db)
        edited = [Migration(m.version, m.name, m.sql + "\n-- edited\n") for m in shipped]
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(db, edited)
        newer = [*shipped, Migration(9999, "later", "CREATE TABLE later (x int);")]
        assert migrate(db, newer) == ["9999_later"]
        with pytest.raises(MigrationError, match="newer version"):
            migrate(db, shipped)


def test_a_failing_migration_leaves_nothing_half_made(pg_url: str) -> None:
    broken = [
        *migrations(),
        Migration(9000, "broken", "CREATE TABLE half (x int); SELECT no_such_function();"),
    ]
    with psycopg.connect(pg_url) as db:
        with pytest.raises(psycopg.errors.UndefinedFunction):
            migrate(db, broken)
        db.rollback()
        tables = db.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_name IN ('half', 'work_items', 'leases')"
        ).fetchone()
        assert tables == (0,)

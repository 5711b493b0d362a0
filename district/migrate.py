"""The district's schema: versioned SQL files applied at start, by whichever instance is first.

``migrations/NNNN_name.sql`` are applied in order, each once, all pending ones in a single
transaction that first takes a transaction-scoped advisory lock: instances starting together
queue on that lock, and the second finds the work done. PostgreSQL's DDL is transactional, so a
migration that fails leaves nothing half-made; the lock dies with its session, so an instance
killed while migrating blocks nobody (no lock row to break by hand). Each applied file's
SHA-256 is kept: a file changed after it was applied stops the start with an error, and so does a
database migrated by a newer jiayuan than this one. Why this and not Alembic or yoyo:
docs/district.md.

A migration must be valid inside a transaction (no ``CREATE INDEX CONCURRENTLY``, no
``VACUUM``), and should keep the previous version working (add, then remove in a later
release) because instances are upgraded one at a time.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

LOCK_KEY = 0x6A69617975616E  # "jiayuan": pg_advisory_xact_lock's key for migrating
FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database's schema cannot be brought to this version's (a changed or unknown file)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The package's migration files, in version order."""
    found = []
    for entry in resources.files("district.migrations").iterdir():
        m = FILE_NAME.match(entry.name)
        if m:
            found.append(Migration(int(m[1]), m[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


def migrate(db: psycopg.Connection[Any], known: list[Migration] | None = None) -> list[str]:
    """Apply what ``db`` lacks of ``known`` (default: the package's files); returns the names
    applied (empty when the schema was current). ``db`` must not be in a transaction."""
    todo = migrations() if known is None else known
    applied_now: list[str] = []
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = db.execute("SELECT version, name, sha256 FROM schema_migrations").fetchall()
        applied = {int(v): (str(n), str(h)) for v, n, h in rows}
        by_version = {m.version: m for m in todo}
        if newer := sorted(v for v in applied if v not in by_version):
            raise MigrationError(
                f"the database has migrations this jiayuan does not know ({newer}):"
                " it was migrated by a newer version"
            )
        for m in todo:
            if m.version in applied:
                if applied[m.version][1] != m.sha256:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name}.sql was changed after it was"
                        " applied: add a new migration instead"
                    )
                continue
            db.execute(m.sql.encode())
            db.execute(
                "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                (m.version, m.name, m.sha256),
            )
            applied_now.append(f"{m.version:04d}_{m.name}")
    return applied_now

"""``auth.db``: staff passwords (hashes), console sessions, bearer tokens and the audit trail,
in one SQLite file (WAL) under the data directory, apart from the registry files; or the same
tables in PostgreSQL (district/migrations/0005_auth.sql) when opened with a ``postgresql://``
URL, where every instance sees the same sessions and tokens. One statement text runs on both
(:mod:`base.sql`).

Nothing secret is stored as given: passwords as Argon2id hashes, session ids and tokens as
SHA-256 digests (they are 256-bit random values, so a digest cannot be reversed or guessed).
A stolen copy of the file therefore opens no session and holds no usable token.

Each call opens its own short connection (SQLite) or takes a pool's (PostgreSQL): callers are
API worker threads, the event loop and the ``jiayuan staff`` command, possibly at once.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from psycopg_pool import ConnectionPool

from base import sql, sqlite
from base.datadir import DataDir
from base.sql import Db, Row
from base.sqlite import transaction
from district.pg import open_pool

if TYPE_CHECKING:
    from jiayuan.settings import Settings

TOKEN_PREFIX: Final = "jy_"
FAILURES_KEPT_S: Final = 3600.0
"""Failed sign-in counts (PostgreSQL's ``signin_failures``) idle this long are deleted by
:meth:`AuthStore.prune` (the limiter forgets them after 15 minutes anyway)."""
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS credentials (
    staff_id   TEXT PRIMARY KEY,
    hash       TEXT NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    digest     TEXT PRIMARY KEY,
    staff_id   TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    ip         TEXT NOT NULL DEFAULT '',
    ended_at   REAL
);
CREATE INDEX IF NOT EXISTS sessions_staff ON sessions (staff_id);
CREATE TABLE IF NOT EXISTS tokens (
    id         INTEGER PRIMARY KEY,
    digest     TEXT NOT NULL UNIQUE,
    hint       TEXT NOT NULL,
    staff_id   TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL,
    revoked_by TEXT
);
CREATE INDEX IF NOT EXISTS tokens_staff ON tokens (staff_id);
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'refused')),
    ip      TEXT NOT NULL DEFAULT '',
    detail  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor, at);
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, at);
CREATE TABLE IF NOT EXISTS registry_seen (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    staff_id: str
    csrf: str
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    hint: str
    """The first characters of the token, to recognise it in a list (not enough to use it)."""
    staff_id: str
    name: str
    created_at: float
    created_by: str
    expires_at: float
    revoked_at: float | None
    revoked_by: str | None

    @classmethod
    def of(cls, r: Row) -> Token:
        return sqlite.from_row(cls, r)


class AuthStore:
    """Staff access on a SQLite file (a path) or a PostgreSQL database (a ``postgresql://``
    URL: a pool of its own, or ``pool``, opened after the migrations ran)."""

    def __init__(
        self,
        where: Path | str,
        clock: Callable[[], float] = time.time,
        *,
        pool: ConnectionPool | None = None,
    ) -> None:
        self.clock = clock
        self.where: Path | str
        self._pool: ConnectionPool | None = None
        self._owns_pool = False
        if sql.is_postgresql(where):
            self.where = str(where)
            self._owns_pool = pool is None
            self._pool = open_pool(self.where, name="jiayuan-auth") if pool is None else pool
            return
        self.where = path = Path(where)
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite.connect(path)) as db:
            db.executescript(SCHEMA)
        path.chmod(0o600)

    @property
    def shared(self) -> bool:
        """Whether several instances share this store (PostgreSQL)."""
        return self._pool is not None

    @classmethod
    def open(cls, where: Path | str, clock: Callable[[], float] = time.time) -> AuthStore:
        """The store at ``where``: a SQLite file's path, or a ``postgresql://`` URL."""
        return cls(where, clock)

    def close(self) -> None:
        """Close the pool this store opened (nothing to close on SQLite)."""
        if self._pool is not None and self._owns_pool:
            self._pool.close()

    @contextmanager
    def db(self) -> Iterator[Db]:
        """One connection, one transaction (committed on success, rolled back on an exception).
        SQLite: deferred, so a block that only reads takes no write lock (every request reads a
        session or a token), and a block that writes does so first, so it waits for another
        writer rather than failing. PostgreSQL: a pool's connection (READ COMMITTED)."""
        if self._pool is not None:
            with self._pool.connection() as conn:
                yield sql.PgDb(conn)
            return
        assert isinstance(self.where, Path)
        with (
            closing(sqlite.connect(self.where, wal=False, row_factory=sqlite3.Row)) as db,
            transaction(db, immediate=False),
        ):
            yield db

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Run the block while no other instance runs one of the same ``name``: PostgreSQL, a
        transaction-scoped advisory lock held on a pool's connection of its own (released when
        the block ends, or when a killed instance's session dies); SQLite, nothing (one process
        owns the file)."""
        if self._pool is None:
            yield
            return
        key = int.from_bytes(hashlib.sha256(f"jiayuan.auth.{name}".encode()).digest()[:8], "big")
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (key - (1 << 63),))
            yield

    # ------------------------------------------------------------------ passwords

    def set_password_hash(
        self, staff_id: str, hashed: str, by: str, *, end_sessions: bool = True
    ) -> int:
        """Store ``staff_id``'s hash and (a new password) end their sessions; how many ended."""
        now = self.clock()
        with self.db() as db:
            db.execute(
                "INSERT INTO credentials (staff_id, hash, updated_at, updated_by)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (staff_id) DO UPDATE SET hash = excluded.hash,"
                " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (staff_id, hashed, now, by),
            )
            return _end_sessions(db, staff_id, now) if end_sessions else 0

    def password_hash(self, staff_id: str) -> str | None:
        with self.db() as db:
            row = db.execute(
                "SELECT hash FROM credentials WHERE staff_id = ?", (staff_id,)
            ).fetchone()
        return None if row is None else str(row["hash"])

    def remove_password(self, staff_id: str) -> bool:
        with self.db() as db:
            n = db.execute("DELETE FROM credentials WHERE staff_id = ?", (staff_id,)).rowcount
            _end_sessions(db, staff_id, self.clock())
        return n > 0

    def with_password(self) -> set[str]:
        with self.db() as db:
            return {r[0] for r in db.execute("SELECT staff_id FROM credentials")}

    # ------------------------------------------------------------------ sessions

    def start_session(self, staff_id: str, ttl_s: float, ip: str) -> tuple[str, Session]:
        """A new session: its id (the cookie's value, returned once, stored as a digest)."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        s = Session(staff_id, secrets.token_urlsafe(32), now, now + ttl_s)
        with self.db() as db:
            db.execute(
                "INSERT INTO sessions (digest, staff_id, csrf, created_at, expires_at, ip)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (digest(sid), staff_id, s.csrf, now, s.expires_at, ip),
            )
        return sid, s

    def session(self, sid: str) -> Session | None:
        """The live session of this id; None when unknown, ended or expired."""
        with self.db() as db:
            r = db.execute(
                "SELECT * FROM sessions WHERE digest = ? AND ended_at IS NULL AND expires_at > ?",
                (digest(sid), self.clock()),
            ).fetchone()
        return None if r is None else sqlite.from_row(Session, r)

    def end_session(self, sid: str) -> bool:
        with self.db() as db:
            return (
                db.execute(
                    "UPDATE sessions SET ended_at = ? WHERE digest = ? AND ended_at IS NULL",
                    (self.clock(), digest(sid)),
                ).rowcount
                > 0
            )

    # ------------------------------------------------------------------ tokens

    def create_token(self, staff_id: str, name: str, ttl_s: float, by: str) -> tuple[str, Token]:
        """A new bearer token: the token itself (shown once) and its record."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        with self.db() as db:
            token_id = sql.insert_id(
                db,
                "INSERT INTO tokens (digest, hint, staff_id, name, created_at, created_by,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (digest(token), token[:10], staff_id, name, now, by, now + ttl_s),
            )
            row = db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return token, Token.of(row)

    def token(self, token: str) -> Token | None:
        """The live token; None when unknown, revoked or expired."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        with self.db() as db:
            r = db.execute(
                "SELECT * FROM tokens WHERE digest = ? AND revoked_at IS NULL AND expires_at > ?",
                (digest(token), self.clock()),
            ).fetchone()
        return None if r is None else Token.of(r)

    def tokens(self, staff_id: str | None = None) -> list[Token]:
        """Tokens (of one person), newest first, revoked and expired ones included."""
        where, args = ("WHERE staff_id = ?", (staff_id,)) if staff_id else ("", ())
        with self.db() as db:
            rows = db.execute(f"SELECT * FROM tokens {where} ORDER BY id DESC", args).fetchall()
        return [Token.of(r) for r in rows]

    def get_token(self, token_id: int) -> Token | None:
        with self.db() as db:
            r = db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return None if r is None else Token.of(r)

    def revoke_token(self, token_id: int, by: str) -> Token | None:
        """Revoke it (a revoked one stays as it was); None when there is no such token."""
        with self.db() as db:
            db.execute(
                "UPDATE tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?"
                " AND revoked_at IS NULL",
                (self.clock(), by, token_id),
            )
        return self.get_token(token_id)

    def forget(self, staff_id: str, by: str) -> tuple[int, int, bool]:
        """A staff member removed from the registry: end their sessions, revoke their tokens
        and delete their password, so that a new hire given the same id starts with none.
        How many sessions ended, tokens were revoked, and whether a password was deleted."""
        now = self.clock()
        with self.db() as db:
            ended = _end_sessions(db, staff_id, now)
            revoked = db.execute(
                "UPDATE tokens SET revoked_at = ?, revoked_by = ? WHERE staff_id = ?"
                " AND revoked_at IS NULL",
                (now, by, staff_id),
            ).rowcount
            removed = db.execute("DELETE FROM credentials WHERE staff_id = ?", (staff_id,))
        return ended, int(revoked), removed.rowcount > 0

    # ------------------------------------------------------------------ upkeep

    def prune(self, keep_s: float = 30 * 86_400.0) -> int:
        """Forget sessions and tokens that ended (expired, revoked) more than ``keep_s`` ago,
        and (PostgreSQL) failed sign-in counts idle for longer than the limiter remembers."""
        cutoff = self.clock() - keep_s
        with self.db() as db:
            n = db.execute(
                "DELETE FROM sessions WHERE expires_at < ? OR ended_at < ?", (cutoff, cutoff)
            ).rowcount
            n += db.execute(
                "DELETE FROM tokens WHERE expires_at < ? OR revoked_at < ?", (cutoff, cutoff)
            ).rowcount
            if self.shared:
                db.execute(
                    "DELETE FROM signin_failures WHERE GREATEST(last, locked_until)"
                    " < extract(epoch from clock_timestamp()) - ?",
                    (FAILURES_KEPT_S,),
                )
        return int(n)


def _end_sessions(db: Db, staff_id: str, now: float) -> int:
    return int(
        db.execute(
            "UPDATE sessions SET ended_at = ? WHERE staff_id = ? AND ended_at IS NULL",
            (now, staff_id),
        ).rowcount
    )


def installed(settings: Settings) -> AuthStore:
    """The installation's staff store: in PostgreSQL when ``JIAYUAN_DATABASE_URL`` is set (every
    instance shares sessions, tokens and the audit trail), else ``auth.db`` in the data
    directory. The one way the service, the API and the commands open it."""
    return AuthStore.open(settings.database() or DataDir(settings.data_dir).auth)

"""Labels caretakers give their residents (what they call them, e.g. ``302 的王奶奶``), kept
beside the registry in a small SQLite file (``resident_labels.db`` in the data directory) so a
registry reload never loses them — or, when the installation's staff store is shared
(PostgreSQL, several instances), in its ``resident_labels`` table, so that a name given through
one instance shows on every instance's console (district/migrations/0013_resident_labels.sql).
A label, when set, is shown instead of the registry's ``display_name`` — to the same people only
(the resident's caretakers, managers, admins); it is never logged.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import Final, Protocol

from base import sqlite
from base.datadir import DataDir
from base.sql import Db
from base.sqlite import transaction

MAX_LABEL: Final = 40
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS resident_labels (
    resident_id TEXT PRIMARY KEY,
    label       TEXT NOT NULL,
    set_by      TEXT NOT NULL,
    set_at      REAL NOT NULL
);
"""


_UPSERT: Final = (
    "INSERT INTO resident_labels (resident_id, label, set_by, set_at)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (resident_id) DO UPDATE SET"
    " label = excluded.label, set_by = excluded.set_by, set_at = excluded.set_at"
)


class SharedStore(Protocol):
    """The installation's staff store (``jiayuan.auth.store.AuthStore``), as far as labels
    need it."""

    @property
    def shared(self) -> bool: ...
    def db(self) -> AbstractContextManager[Db]: ...


class Labels(Protocol):
    def all(self) -> dict[str, str]: ...
    def set(self, resident_id: str, label: str, by: str) -> None: ...


def _clean(label: str) -> str:
    return " ".join(label.split())[:MAX_LABEL]


def _read(db: Db) -> dict[str, str]:
    """resident_id → label, from either store."""
    rows = db.execute("SELECT resident_id, label FROM resident_labels").fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def _write(db: Db, resident_id: str, label: str, by: str) -> None:
    """Set (or, when ``label`` is blank once cleaned, remove) a resident's label, inside the
    caller's transaction on either store."""
    label = _clean(label)
    if not label:
        db.execute("DELETE FROM resident_labels WHERE resident_id = ?", (resident_id,))
        return
    db.execute(_UPSERT, (resident_id, label, by, time.time()))


class SharedLabels:
    """The labels in the shared staff store's ``resident_labels`` table."""

    def __init__(self, store: SharedStore) -> None:
        self.store = store

    def all(self) -> dict[str, str]:
        with self.store.db() as db:
            return _read(db)

    def set(self, resident_id: str, label: str, by: str) -> None:
        with self.store.db() as db:
            _write(db, resident_id, label, by)


class ResidentLabels:
    """The labels in ``resident_labels.db`` of one data directory (one instance)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite.connect(path, wal=False)) as db:
            db.executescript(SCHEMA)
        path.chmod(0o600)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with (
            self._lock,
            closing(sqlite.connect(self.path, wal=False)) as db,
            transaction(db, immediate=False),
        ):
            yield db

    def all(self) -> dict[str, str]:
        """resident_id → label."""
        with self._db() as db:
            return _read(db)

    def set(self, resident_id: str, label: str, by: str) -> None:
        """Set (or, with an empty ``label``, remove) a resident's label."""
        with self._db() as db:
            _write(db, resident_id, label, by)


_OPEN: dict[Path, ResidentLabels] = {}
_OPEN_LOCK = threading.Lock()


def labels_in(data_dir: Path, store: SharedStore | None = None) -> Labels:
    """The labels of the installation: in ``store`` when it is shared by several instances,
    else in the data directory's file (one store per process)."""
    if store is not None and store.shared:
        return SharedLabels(store)
    path = DataDir(data_dir).resident_labels.resolve()
    with _OPEN_LOCK:
        own = _OPEN.get(path)
        if own is None:
            own = _OPEN[path] = ResidentLabels(path)
        return own

"""Labels caretakers give their residents (what they call them, e.g. ``302 的王奶奶``), kept
beside the registry in a small SQLite file (``resident_labels.db`` in the data directory) so a
registry reload never loses them. A label, when set, is shown instead of the registry's
``display_name`` — to the same people only (the resident's caretakers, managers, admins); it
is never logged.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Final

from base import sqlite
from base.datadir import DataDir
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


class ResidentLabels:
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
            return dict(db.execute("SELECT resident_id, label FROM resident_labels").fetchall())

    def set(self, resident_id: str, label: str, by: str) -> None:
        """Set (or, with an empty ``label``, remove) a resident's label."""
        label = " ".join(label.split())[:MAX_LABEL]
        with self._db() as db:
            if not label:
                db.execute("DELETE FROM resident_labels WHERE resident_id = ?", (resident_id,))
                return
            db.execute(
                "INSERT INTO resident_labels (resident_id, label, set_by, set_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (resident_id) DO UPDATE SET"
                " label = excluded.label, set_by = excluded.set_by, set_at = excluded.set_at",
                (resident_id, label, by, time.time()),
            )


_OPEN: dict[Path, ResidentLabels] = {}
_OPEN_LOCK = threading.Lock()


def labels_in(data_dir: Path) -> ResidentLabels:
    """The labels store of a data directory (one per process)."""
    path = DataDir(data_dir).resident_labels.resolve()
    with _OPEN_LOCK:
        store = _OPEN.get(path)
        if store is None:
            store = _OPEN[path] = ResidentLabels(path)
        return store

"""The data directory's files, named in one place.

``JIAYUAN_DATA_DIR`` (``Settings.data_dir``) holds one SQLite file per store; every part that
opens one (the service, the API, the CLIs, the backtest, the demo, the tests) asks
:class:`DataDir` for its path rather than spelling the name again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DataDir:
    """The files under ``root``; nothing is created or opened here."""

    root: Path

    @property
    def journal(self) -> Path:
        """Readings, dead letters, device state, rollups, followers' cursors
        (:mod:`ingest.journal`)."""
        return self.root / "journal.db"

    @property
    def alerts(self) -> Path:
        """Alerts, their history, paging, silences, incidents, rule state
        (:mod:`alerts.db`)."""
        return self.root / "alerts.db"

    @property
    def auth(self) -> Path:
        """Staff passwords, sessions, tokens and the audit trail (:mod:`jiayuan.auth.store`)."""
        return self.root / "auth.db"

    @property
    def resident_labels(self) -> Path:
        """Staff-set labels for residents (:mod:`registry.labels`)."""
        return self.root / "resident_labels.db"

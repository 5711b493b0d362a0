"""The audit trail: who did what, when and from where — sign-ins (and refused ones), sign-outs,
tokens, acknowledgements, resolutions, silences, credential and registry changes.

Kept in ``auth.db`` (table ``audit``, append-only by a trigger), or in PostgreSQL beside the
other auth tables (:class:`AuthStore` on a URL), where a trigger refuses UPDATE, TRUNCATE and
any DELETE but retention's (:meth:`AuditLog.prune`). ``detail`` is a small JSON
object of ids and counts: never a password, a token, a health value or a person's name.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final, Literal

from base import sql
from base.sqlite import from_row
from jiayuan.auth.store import AuthStore

log = logging.getLogger(__name__)

Outcome = Literal["ok", "refused"]
ACTIONS: Final = (
    "auth.login",
    "auth.login_failed",
    "auth.login_limited",
    "auth.logout",
    "token.create",
    "token.revoke",
    "alert.acknowledge",
    "alert.resolve",
    "silence.create",
    "silence.expire",
    "credential.set",
    "credential.remove",
    "credential.forget",
    "registry.changed",
)


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    at: float
    actor: str
    """A staff id, ``admin-token``, ``cli:<user>`` or ``anonymous``."""
    action: str
    target: str
    outcome: Outcome
    ip: str
    detail: dict[str, Any]


class AuditLog:
    def __init__(self, store: AuthStore) -> None:
        self.store = store

    def record(
        self,
        actor: str,
        action: str,
        *,
        target: str = "",
        outcome: Outcome = "ok",
        ip: str = "",
        **detail: Any,
    ) -> int:
        """Append one entry; its id. An audit write that fails is logged, never raised: the
        action it records has already happened."""
        try:
            with self.store.db() as db:
                entry_id = sql.insert_id(
                    db,
                    "INSERT INTO audit (at, actor, action, target, outcome, ip, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        self.store.clock(),
                        actor,
                        action,
                        target,
                        outcome,
                        ip,
                        json.dumps(detail, sort_keys=True, default=str),
                    ),
                )
                return entry_id or 0
        except Exception:
            log.exception("audit entry %s by %s not written", action, actor)
            return 0

    def page(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        outcome: Outcome | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Entry], int]:
        """Newest first. ``action`` ending in ``.`` matches a family (``auth.``)."""
        parts: list[str] = []
        args: list[Any] = []
        if action is not None and action.endswith("."):
            parts.append("action LIKE ? ESCAPE '\\'")
            args.append(action.replace("_", "\\_") + "%")
        elif action is not None:
            parts.append("action = ?")
            args.append(action)
        for clause, value in (
            ("actor = ?", actor),
            ("outcome = ?", outcome),
            ("at >= ?", since),
            ("at < ?", until),
        ):
            if value is not None:
                parts.append(clause)
                args.append(value)
        where = " WHERE " + " AND ".join(parts) if parts else ""
        with self.store.db() as db:
            total = int(db.execute(f"SELECT count(*) FROM audit{where}", args).fetchone()[0])
            rows = db.execute(
                f"SELECT * FROM audit{where} ORDER BY id DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [from_row(Entry, r, detail=json.loads(r["detail"])) for r in rows], total

    def last(self, action: str) -> Entry | None:
        items, _ = self.page(action=action, limit=1)
        return items[0] if items else None

    def prune(self, before: float) -> int:
        """Delete the entries older than ``before`` (retention); how many. The only DELETE the
        PostgreSQL trigger lets through: this transaction says it is retention's."""
        with self.store.db() as db:
            if sql.dialect(db) == "postgresql":
                db.execute("SELECT set_config('jiayuan.audit_prune', 'on', true)")
            return int(db.execute("DELETE FROM audit WHERE at < ?", (before,)).rowcount)

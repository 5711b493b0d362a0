"""Changes to staff access made outside the API — a password set or removed by the
``jiayuan staff`` command (or the demo), the registry loaded with other staff or roles — each
leaving its entry in the audit trail."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, Final

from jiayuan.auth import passwords
from jiayuan.auth.audit import AuditLog
from jiayuan.auth.store import AuthStore
from registry import Registry

LISTED: Final = 50


class UnknownStaff(LookupError):
    pass


def set_password(
    store: AuthStore,
    registry: Registry,
    staff_id: str,
    password: str,
    actor: str,
    *,
    ip: str = "local",
) -> int:
    """Check the policy, hash and store ``staff_id``'s password, end their sessions (how many
    is returned) and audit it. Raises :class:`UnknownStaff` or
    :class:`~jiayuan.auth.passwords.WeakPassword`."""
    if staff_id not in registry.staff:
        raise UnknownStaff(f"no staff member '{staff_id}' in the registry")
    passwords.check_policy(password, staff_id)
    ended = store.set_password_hash(staff_id, passwords.hash_password(password), actor)
    AuditLog(store).record(actor, "credential.set", target=staff_id, ip=ip, sessions_ended=ended)
    return ended


def remove_password(store: AuthStore, staff_id: str, actor: str, *, ip: str = "local") -> bool:
    removed = store.remove_password(staff_id)
    if removed:
        AuditLog(store).record(actor, "credential.remove", target=staff_id, ip=ip)
    return removed


def forget_staff(store: AuthStore, staff_ids: Iterable[str], actor: str = "system") -> int:
    """Staff members removed from the registry: their sessions end, their tokens are revoked
    and their passwords deleted (a new hire given the same id starts with none); audited as
    ``credential.forget`` for each who had any. How many had any."""
    n = 0
    for sid in staff_ids:
        ended, revoked, removed = store.forget(sid, actor)
        if ended or revoked or removed:
            n += 1
            AuditLog(store).record(
                actor,
                "credential.forget",
                target=sid,
                ip="local",
                sessions_ended=ended,
                tokens_revoked=revoked,
                password_removed=removed,
            )
    return n


def note_registry(store: AuthStore, registry: Registry) -> dict[str, Any] | None:
    """Compare the registry's staff (roles, places) and care assignments with those seen at
    the last start; audit ``registry.changed`` when they differ, and forget the access of staff
    removed since (:func:`forget_staff`: files edited while the service was stopped). The
    entry's detail, or None. Instances starting together on one database take turns (the
    first audits the change, the next finds it seen)."""
    with store.exclusive("registry_seen"):
        return _note_registry(store, registry)


def _note_registry(store: AuthStore, registry: Registry) -> dict[str, Any] | None:
    staff = {
        s.staff_id: json.dumps([s.role, sorted(s.buildings), sorted(s.compounds)])
        for s in registry.staff.values()
    }
    care = hashlib.sha256(
        json.dumps(
            sorted((r.resident_id, list(r.caretakers)) for r in registry.residents.values())
        ).encode()
    ).hexdigest()
    with store.db() as db:
        rows = dict(db.execute("SELECT key, value FROM registry_seen").fetchall())
    before: dict[str, str] = json.loads(rows.get("staff", "{}"))
    added = sorted(staff.keys() - before.keys())
    removed = sorted(before.keys() - staff.keys())
    changed = sorted(k for k in staff.keys() & before.keys() if staff[k] != before[k])
    care_changed = rows.get("care") != care
    if not (added or removed or changed or care_changed):
        return None
    detail: dict[str, Any] = {
        "staff": len(staff),
        "residents": len(registry.residents),
        "devices": len(registry.devices),
        "staff_added": added[:LISTED],
        "staff_removed": removed[:LISTED],
        "staff_changed": changed[:LISTED],
        "counts": {"added": len(added), "removed": len(removed), "changed": len(changed)},
        "assignments_changed": care_changed,
        "first": not rows,
    }
    AuditLog(store).record(
        "system", "registry.changed", target=registry.community, ip="local", **detail
    )
    forget_staff(store, removed)
    with store.db() as db:
        db.executemany(
            "INSERT INTO registry_seen (key, value) VALUES (?, ?) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value",
            [("staff", json.dumps(staff, sort_keys=True)), ("care", care)],
        )
    return detail

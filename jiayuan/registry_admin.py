"""The registry while the service runs: one holder of the current :class:`Registry`, and the one
way to change it.

Every part that reads the registry keeps its own view of it (the rule engine its labels,
overrides and areas; routing its duty roster; staff access its scopes; the journal the devices'
placements) and subscribes a *swap hook* here. :meth:`RegistryAdmin.apply` checks a new registry
(the loader's cross-checks), writes it to the registry files (:mod:`jiayuan.registry_files`),
calls every hook in turn, writes the broker's accounts again and reloads the broker, and audits
the change with what changed (:func:`registry.diff.diff`). Changes are serialized: one at a
time, each against the registry the one before left.

A hook makes the swap atomic from its own threads' view: the rules worker takes the new registry
on its thread between two batches (no reading is evaluated half with one registry, half with
the other; the cursor does not move), the dispatcher on its thread between two events (an alert
being paged keeps the roster it was routed with; the next is routed with the new one). A device
retired keeps its history and its open alerts, which stay visible and can be resolved; a device
moved is labelled with its new place from its next alert on.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final

from jiayuan.auth.audit import AuditLog
from jiayuan.broker.live import BrokerAccounts
from jiayuan.registry_files import NotWritable, RegistryFiles
from registry import Problem, Registry, RegistryError, check_registry
from registry.assignments import stamp_assignments
from registry.diff import RegistryDiff, diff

log = logging.getLogger(__name__)

Hook = Callable[[Registry], object]
"""Returns once the part uses the new registry; ``False``: not yet (it will, in its turn)."""

NOT_MANAGED = (
    "broker accounts are not updated by the service (JIAYUAN_BROKER_ACCOUNTS_DIR and"
    " JIAYUAN_BROKER_RELOAD_COMMAND or JIAYUAN_BROKER_PID_FILE are not set): run `jiayuan"
    " broker credentials` and reload the broker for an added device to connect, or a retired"
    " one to be refused"
)


BROKER_PROBLEM: Final = (
    "broker accounts not updated: a device added or retired may not connect or be refused"
    " (why: GET /api/health, admins and operators)"
)


@dataclass(frozen=True, slots=True)
class Applied:
    """One change as applied: what changed, and what became of the broker's accounts."""

    diff: RegistryDiff
    broker: str
    """``updated``, ``unchanged``, ``not managed`` or ``failed``."""
    broker_detail: str = ""
    passwords: dict[str, str] = field(default_factory=dict)
    """New device accounts' passwords, for the response to whoever added them, once."""
    superseded: list[str] = field(default_factory=list)


class RegistryAdmin:
    def __init__(
        self,
        registry: Registry,
        files: RegistryFiles,
        *,
        audit: AuditLog | None = None,
        broker: BrokerAccounts | None = None,
        ways: Collection[str] | None = None,
    ) -> None:
        """``ways``: what a device's ``via`` may name (the MQTT profiles and the integrations
        in force); a change that gives a device another is refused. None: not checked."""
        self._current = registry
        self.ways = None if ways is None else frozenset(ways)
        self.files = files
        self.audit = audit
        self.broker = broker
        self._hooks: list[tuple[str, Hook]] = []
        self._lock = threading.RLock()
        self.changed_at: float | None = None
        self.broker_problem: str | None = None
        """Why the last broker update failed, until one succeeds (health shows it)."""

    @property
    def current(self) -> Registry:
        return self._current

    def subscribe(self, name: str, hook: Hook) -> None:
        """Call ``hook(new)`` at every swap, after those subscribed before; it returns once the
        part uses the new registry (``name`` is for the log)."""
        self._hooks.append((name, hook))

    # ------------------------------------------------------------------ changes

    def apply(
        self, new: Registry, *, actor: str, action: str, ip: str = "local", target: str = ""
    ) -> RegistryDiff:
        """Validate (the loader's cross-checks), persist to the registry files, swap it in
        everywhere (rules, routing, scopes, console), regenerate broker accounts and reload the
        broker; audited as ``action`` by ``actor``. Raises :class:`RegistryError` (problems
        name the record and field) or :class:`NotWritable`; on error nothing changes."""
        return self.apply_change(new, actor=actor, action=action, ip=ip, target=target).diff

    def apply_change(
        self, new: Registry, *, actor: str, action: str, ip: str = "local", target: str = ""
    ) -> Applied:
        """:meth:`apply`, answering also what became of the broker accounts."""
        with self._lock:
            return self._apply(new, actor, action, ip, target, persist=True)

    def edit(
        self,
        change: Callable[[Registry], Registry],
        *,
        actor: str,
        action: str,
        ip: str = "local",
        target: str = "",
    ) -> Applied:
        """Apply ``change(current)``, the current registry read under the lock (no change made
        meanwhile is lost). ``change`` may raise (nothing is changed then)."""
        with self._lock:
            return self._apply(change(self._current), actor, action, ip, target, persist=True)

    def reload(self, *, actor: str, ip: str = "local") -> Applied:
        """Read the registry files again and swap in what they say (``POST
        /api/registry/reload``, SIGHUP). A file that does not load is refused with its problems
        (file, row or line, field) and the running registry stays."""
        with self._lock:
            try:
                new = self.files.read()
            except (RegistryError, NotWritable) as e:
                self._refused(actor, "registry.reload", ip, self.files.source, e)
                raise
            return self._apply(
                new, actor, "registry.reload", ip, str(self.files.source), persist=False
            )

    def _apply(
        self, new: Registry, actor: str, action: str, ip: str, target: str, *, persist: bool
    ) -> Applied:
        old = self._current
        stamped = stamp_assignments(old, new, time.time())
        # a wearable's new wearer is marked in the files too (a reload included), so that
        # after a restart the previous wearer's readings stay theirs
        persist = persist or stamped is not new
        new = stamped
        try:
            if new.community != old.community:
                raise RegistryError([_problem(f"the registry is community {old.community!r}")])
            started = time.monotonic()
            check_registry(new)
            self._check_ways(old, new)
            change = diff(old, new)
            checked = time.monotonic()
            superseded = self.files.write(new) if persist and not change.empty else []
            log.debug(
                "registry: checked in %.3f s, written in %.3f s",
                checked - started,
                time.monotonic() - checked,
            )
        except (RegistryError, NotWritable) as e:
            self._refused(actor, action, ip, target, e)
            raise
        if change.empty:
            applied = (
                self._accounts(new, change, [])
                if self.broker_problem
                else Applied(change, "unchanged")
            )
        else:
            self._swap(new)
            applied = self._accounts(new, change, superseded)
            log.info("registry: %s by %s: %s", action, actor, change.summary())
        if self.audit is not None:
            detail: dict[str, Any] = {
                "changes": change.summary(),
                "diff": change.redacted().model_dump(mode="json"),  # no resident names
                "broker": applied.broker,
                "broker_accounts_added": sorted(applied.passwords),
            }
            if superseded:
                detail["superseded"] = superseded
            self.audit.record(actor, action, target=target, ip=ip, **detail)
        return applied

    def _check_ways(self, old: Registry, new: Registry) -> None:
        """A device added, or whose ``via`` changed, must name a way in that is in force (a
        typo would refuse every reading of it). Those left as they were are not checked: a
        profile dropped from the configuration does not block every other change."""
        if self.ways is None:
            return
        problems = [
            Problem(
                f"devices[{d.device_id}]",
                None,
                "via",
                f"no device profile or integration {d.via!r}"
                f" (known: {', '.join(sorted(self.ways)) or 'none'})",
            )
            for d in new.devices.values()
            if d.via is not None
            and d.via not in self.ways
            and (old.devices.get(d.device_id) is None or old.devices[d.device_id].via != d.via)
        ]
        if problems:
            raise RegistryError(problems)

    def _swap(self, new: Registry) -> None:
        self._current = new
        self.changed_at = time.time()
        for name, hook in self._hooks:
            started = time.monotonic()
            try:
                if hook(new) is False:
                    log.warning("registry: %s did not take the new registry in time yet", name)
            except Exception:  # the others still swap; the error counters say it
                log.exception("registry: swapping the new registry into %s failed", name)
            log.debug("registry: %s swapped in %.3f s", name, time.monotonic() - started)

    def reconcile(self, *, actor: str = "system:start") -> Applied | None:
        """Write the broker's accounts for the current registry and reload the broker (once, at
        the service's start): repairs a crash between a registry file written and its accounts,
        and a broker not reloaded before a restart. Idempotent; audited when it added or removed
        an account or failed. None when the service does not keep the accounts."""
        if self.broker is None:
            return None
        with self._lock:
            current = self._current
            applied = self._accounts(current, diff(current, current), [], force=True)
            if self.audit is not None and (applied.broker == "failed" or applied.passwords):
                self.audit.record(
                    actor,
                    "registry.broker_accounts",
                    target=current.community,
                    ip="local",
                    broker=applied.broker,
                    broker_accounts_added=sorted(applied.passwords),
                )
            return applied

    def _accounts(
        self, new: Registry, change: RegistryDiff, superseded: list[str], *, force: bool = False
    ) -> Applied:
        if change.devices.empty and self.broker_problem is None and not force:
            # accounts and their topics come from the devices alone; after a failed update,
            # any change (a reload of the same files too) tries again
            return Applied(change, "unchanged", "", {}, superseded)
        if self.broker is None:
            touched = change.devices.added or change.devices.removed
            return Applied(change, "not managed", NOT_MANAGED if touched else "", {}, superseded)
        retried = force or self.broker_problem is not None
        try:
            update = self.broker.update(new, force=retried)
        except Exception as e:  # a bad group (KeyError), a full disk …: said, audited, retried
            why = f"accounts not written: {type(e).__name__}: {e}"
            return self._broker_failed(change, superseded, why, {})
        if update.reload_failed is not None:
            why = f"accounts written, broker not reloaded: {update.reload_failed}"
            return self._broker_failed(change, superseded, why, update.passwords)
        self.broker_problem = None
        r = update.report
        if not (r.added or r.removed or retried):
            return Applied(change, "unchanged", "", {}, superseded)
        detail = f"added {', '.join(r.added) or 'none'}; removed {', '.join(r.removed) or 'none'}"
        return Applied(change, "updated", detail, update.passwords, superseded)

    def _broker_failed(
        self, change: RegistryDiff, superseded: list[str], why: str, passwords: dict[str, str]
    ) -> Applied:
        self.broker_problem = f"broker accounts not updated: {why}"
        log.warning("registry: %s", self.broker_problem)
        return Applied(change, "failed", self.broker_problem, passwords, superseded)

    def _refused(self, actor: str, action: str, ip: str, target: object, e: Exception) -> None:
        if self.audit is None:
            return
        problems = (
            [without_value(p) for p in e.problems[:20]]
            if isinstance(e, RegistryError)
            else [str(e)]
        )
        self.audit.record(
            actor, action, target=str(target or ""), outcome="refused", ip=ip, problems=problems
        )

    # ------------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        """For ``/healthz`` (no credentials): whether the broker's accounts are in step, and
        why not in words without paths, commands or what a command said (:meth:`details`)."""
        return {
            "writable": self.files.not_writable is None,
            "changed_at": self.changed_at,
            "broker_accounts": "not managed" if self.broker is None else "managed",
            "broker_problem": None if self.broker_problem is None else BROKER_PROBLEM,
        }

    def details(self) -> dict[str, Any]:
        """:meth:`health` with where the registry is kept, how the broker is reloaded and what
        went wrong (``GET /api/health``: admins and operators)."""
        return {
            **self.health(),
            "source": None if self.files.source is None else str(self.files.source),
            "broker_accounts": NOT_MANAGED if self.broker is None else self.broker.describe(),
            "broker_problem": self.broker_problem,
        }


_VALUE: Final = re.compile(r"(?: \(got .*\)|, got (?:'.*'|\".*\"))$", re.DOTALL)


def without_value(problem: object) -> str:
    """A problem's where and why without the value refused (a resident's name, a phone
    number …): for the audit trail and the log, which keep no personal data."""
    return _VALUE.sub("", str(problem))


def _problem(message: str) -> Problem:
    return Problem("registry", None, "community", message)

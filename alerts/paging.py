"""Paging: one escalation step taken for one alert — who, what message, the outbox rows and the
history (:class:`Page`, the last stage of the pipeline) — what comes of each delivery
(:class:`Record`: history, reachability of the person, the next step sooner when nobody of a
step can be reached) and the follow-up to those paged when someone acted (:class:`FollowUp`).

A step is taken by a compare-and-set on its timer row in the transaction that writes the step's
outbox rows (:class:`alerts.escalation.Timers`), so it is taken once, whoever polls. The outbox
rows are handed to the notifier's workers after the commit (``submit``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, Final
from zoneinfo import ZoneInfo

from alerts import system
from alerts.db import Writer, severity_rank, signal_rank
from alerts.escalation import Chain, Chains, Timer, Timers
from alerts.lifecycle import AlertStore
from alerts.messages import Context, Language, Purpose, render
from alerts.model import RULE, Alert, AlertNotFound
from alerts.outbox import Attempt, Delivery, Outbox, add, update_reason
from alerts.planning import Plan, plan, urgent
from alerts.routing import Router, Target
from alerts.stages import History, Item
from alerts.throttle import Coalescer
from rules.transitions import Transition

log = logging.getLogger(__name__)

HALF_HOUR = 1800.0
UNREACHABLE = system.STAFF_UNREACHABLE.id
NOBODY = system.NOBODY_REACHED.id
MAX_NAMED = 12
Submit = Callable[[list[int]], None]
"""Hands committed outbox rows to the notifier (:meth:`alerts.notify.Notifier.submit`)."""


@dataclass(frozen=True, slots=True)
class Wording:
    """How messages are written: language, the link's base, the roster's time zone."""

    language: Language
    base_url: str
    tz: ZoneInfo


class Reach:
    """Who and what cannot be reached, as trouble alerts for the operators: a person every
    channel of whom failed (``staff_unreachable``), a route whose alerts found nobody on duty
    (``nobody_reached``). Shared by :class:`Page` (raises) and :class:`Record` (clears).

    Which of them are open is the alert store's: on SQLite this dispatcher raised and cleared
    every one, so it keeps them in memory (read once at start); on PostgreSQL another instance
    may have raised one (and died), so each question reads the open ones from the database (one
    query over open alerts, asked after a delivery, not per reading)."""

    def __init__(self, store: AlertStore, history: History, community: str) -> None:
        self.store, self.history, self.community = store, history, community
        self.shared = store.shared
        self._unreachable, self._nobody = self._read()

    def _read(self) -> tuple[set[str], set[str]]:
        """The staff ids and routes with an open ``staff_unreachable``/``nobody_reached``."""
        rows = self.store.query(
            "SELECT rule_id, device_id FROM alerts WHERE status IN ('firing', 'acknowledged')"
            " AND rule_id IN (?, ?)",
            (UNREACHABLE, NOBODY),
        )
        return {r[1] for r in rows if r[0] == UNREACHABLE}, {r[1] for r in rows if r[0] == NOBODY}

    def _open(self) -> tuple[set[str], set[str]]:
        if self.shared:
            self._unreachable, self._nobody = self._read()
        return self._unreachable, self._nobody

    def nobody_now(self, a: Alert, now: float) -> None:
        """``a`` reached nobody: a trouble alert for its route (not about paging itself)."""
        if a.rule_id in (UNREACHABLE, NOBODY):
            return
        self._nobody.add(a.route)
        self.history.apply(self._nobody_alert(a, now, firing=True))

    def someone_reached(self, a: Alert, now: float) -> None:
        if a.route in self._open()[1] and a.rule_id != NOBODY:
            self._nobody.discard(a.route)
            self.history.apply(self._nobody_alert(a, now, firing=False))

    def unreachable_now(self, staff_id: str, a: Alert, why: str, now: float) -> None:
        self.history.note(a.id, "notified", f"{staff_id} cannot be reached: {why}")
        if a.rule_id == UNREACHABLE:
            return  # no trouble about the trouble
        self._unreachable.add(staff_id)
        self.history.apply(self._unreachable_alert(staff_id, now, firing=True))

    def reachable(self, staff_id: str, now: float) -> None:
        if staff_id in self._open()[0]:
            self._unreachable.discard(staff_id)
            self.history.apply(self._unreachable_alert(staff_id, now, firing=False))

    @property
    def anybody_unreached(self) -> bool:
        """Whether a route's ``nobody_reached`` is open (read by :meth:`reachable`'s caller
        right after it: on PostgreSQL the sets it read are still fresh)."""
        return bool(self._nobody)

    def _unreachable_alert(self, staff_id: str, now: float, firing: bool) -> Transition:
        labels = {"community": self.community, "staff_id": staff_id}
        return system.STAFF_UNREACHABLE.transition(staff_id, firing=firing, at=now, labels=labels)

    def _nobody_alert(self, a: Alert, now: float, firing: bool) -> Transition:
        """One open ``nobody_reached`` per route: alerts of it were paged to nobody."""
        return system.NOBODY_REACHED.transition(
            a.route,
            firing=firing,
            at=now,
            severity="major" if urgent(a) else "minor",
            summary=f"Alerts of route {a.route} reached nobody: nobody on duty for them",
            labels={"community": self.community, "route": a.route},
        )


class Page:
    """The last stage: take the due step of ``item.timer``'s chain (and the ones due right
    after it: a step that would reach nobody new passes on at once)."""

    def __init__(
        self,
        db: Writer,
        chains: Chains,
        router: Router,
        coalescer: Coalescer,
        history: History,
        reach: Reach,
        wording: Wording,
        submit: Submit,
    ) -> None:
        self.db, self.chains, self.router, self.gate = db, chains, router, coalescer
        self.history, self.reach, self.wording, self.submit = history, reach, wording, submit
        self.tz = wording.tz
        self._later: dict[tuple[object, ...], tuple[float, float | None]] = {}

    def __call__(self, item: Item) -> Item:
        assert item.timer is not None
        self.take(item.alert, item.timer, item.now)
        return item

    def take(self, a: Alert, t: Timer, now: float) -> None:
        chain = self.chains.get(t.chain_id) or self.chains.select(a)
        n = len(chain.steps)
        for _ in range(n + 2):
            paged = self.paged(a)
            p = plan(
                chain,
                t.step,
                lambda sels: self.router.resolve(sels, a, now),
                paged,
                urgent=urgent(a),
            )
            nxt = chain.due(p.step + 1, t.started_at, max(t.due_at, now))
            next_step = p.step + 1
            later = None
            if p.unreached and not paged and not urgent(a):
                later = self._next_on_duty(chain, t.step, a, now)
                if later is not None:  # nobody now: page whoever comes on duty first
                    nxt, next_step = later, t.step
            purpose: Purpose = (
                "notify" if p.step == 0 else "escalate" if p.step < n or p.fallback else "repeat"
            )
            msg = render(
                a,
                self.wording.language,
                self.wording.base_url,
                self.tz,
                Context(purpose, min(p.step, n - 1), n, now - a.raised_at),
            )
            prio = signal_rank(a.signal) * 10 + severity_rank(a.severity)
            outcomes: list[tuple[Target, str]] = []
            with self.db.tx() as db:
                moved = (
                    Timers.finish(db, t)
                    if nxt is None
                    else Timers.move(db, t, now, keep=nxt <= now, step=next_step, due_at=nxt)
                )
                if not moved:
                    return  # another poller took this step
                ids: list[int] = []
                self.gate.lock(db, [tg.staff_id for tg in p.targets])
                for tg in p.targets:
                    how, at = self.gate.decide(
                        db, a, tg.staff_id, purpose, tg.staff_id in p.new, msg, now, prio
                    )
                    outcomes.append((tg, how))
                    if how in ("sent", "held"):
                        ids += add(
                            db,
                            alert_id=a.id,
                            staff_id=tg.staff_id,
                            channels=tg.channels,
                            step=p.step,
                            purpose=purpose,
                            reason=tg.reason,
                            priority=prio,
                            title=msg.title,
                            body=msg.body,
                            now=now,
                            next_at=at,
                        )
            try:
                self._record(a, p, n, outcomes, purpose, paged, now, later)
            finally:  # committed messages go out even if their note could not be written
                self.submit(ids)
            if nxt is None or nxt > now:
                return
            t = replace(
                t, chain_id=chain.id, state="chain", step=next_step, due_at=nxt, muted_by=None
            )

    def _next_on_duty(self, chain: Chain, step: int, a: Alert, now: float) -> float | None:
        """The first half hour within a week when step ``step`` would page someone."""
        start = (now // HALF_HOUR + 1) * HALF_HOUR
        lb = a.labels
        key = (chain.id, step, lb.get("compound"), lb.get("building"), lb.get("resident_id"))
        if self._later.get(key, (None, None))[0] == start:
            return self._later[key][1]  # an alert storm at night asks once per place
        if len(self._later) > 10_000:
            self._later.clear()
        found = self._scan(chain, step, a, start)
        self._later[key] = (start, found)
        return found

    def _scan(self, chain: Chain, step: int, a: Alert, start: float) -> float | None:
        for k in range(7 * 48):
            at = start + k * HALF_HOUR
            p = plan(chain, step, partial(self.router.resolve, alert=a, now=at), (), urgent=False)
            if not p.unreached:
                return at
        return None

    def paged(self, a: Alert) -> set[str]:
        """Everyone paged (or tried) about ``a``'s incident, or about ``a`` when it has none."""
        if a.incident_id is None:
            rows = self.db.query(
                "SELECT DISTINCT staff_id FROM deliveries WHERE alert_id = ?"
                " AND status != 'cancelled' AND purpose != 'update'",
                (a.id,),
            )
        else:
            rows = self.db.query(
                "SELECT DISTINCT d.staff_id FROM deliveries d JOIN alerts a ON a.id = d.alert_id"
                " WHERE a.incident_id = ? AND d.status != 'cancelled' AND d.purpose != 'update'",
                (a.incident_id,),
            )
        return {r[0] for r in rows}

    def _record(
        self,
        a: Alert,
        p: Plan,
        n: int,
        outcomes: Sequence[tuple[Target, str]],
        purpose: str,
        paged: set[str],
        now: float,
        later: float | None = None,
    ) -> None:
        for sk in p.skipped:
            label = f"step {sk.step + 1}/{n}"
            if sk.why == "no notification channel":
                text = f"{label} → " + "; ".join(
                    f"{tg.staff_id} ({tg.reason}; no notification channel)"
                    for tg in sk.targets[:MAX_NAMED]
                )
            elif sk.why == "everyone already paged":
                ids = ", ".join(tg.staff_id for tg in sk.targets[:MAX_NAMED])
                text = f"{label}: everyone on duty already paged ({ids}); next step now"
            else:
                text = f"{label}: nobody on duty for {', '.join(sk.selectors)}"
            data = {
                "kind": "skipped",
                "step": sk.step + 1,
                "steps": n,
                "why": sk.why,
                "people": [self._person(tg, "skipped") for tg in sk.targets[:MAX_NAMED]],
            }
            self.history.note(a.id, "notified" if sk.step == 0 else "escalated", text, data)
        label = f"step {p.step + 1}/{n}" if p.step < n else f"repeat {p.step - n + 1}"
        if p.fallback:
            label += " (fallback: security desk, duty manager)"
        if not p.targets:
            who = "nobody on duty" if not paged else "nobody new on duty"
            text = f"{label}: {who} for {', '.join(p.selectors)}"
            if p.step >= n - 1 and urgent(a):
                text += " nor at the security desk or the duty manager"
            data = {"kind": "unreached", "step": min(p.step, n - 1) + 1, "steps": n}
            if paged:
                self.history.note(a.id, "escalated", text, data | {"kind": "skipped", "why": who})
                return
            text += ": reached nobody"
            if later is not None:
                when = datetime.fromtimestamp(later, self.tz).strftime("%a %H:%M")
                text += f" yet; paging when someone is on duty ({when})"
                data["retry_at"] = later
            self.history.note(a.id, "unreached", text, data)
            log.warning("alert %d (%s) %s", a.id, a.rule_id, text)
            self.reach.nobody_now(a, now)
            return
        named = "; ".join(
            f"{tg.staff_id} ({tg.reason}{_OUTCOME_NOTE[how]})" for tg, how in outcomes[:MAX_NAMED]
        )
        more = f"; and {len(outcomes) - MAX_NAMED} more" if len(outcomes) > MAX_NAMED else ""
        data = {
            "kind": "page",
            "step": min(p.step, n - 1) + 1,
            "steps": n,
            "repeat": max(0, p.step - n + 1),
            "purpose": purpose,
            "fallback": p.fallback,
            "people": [self._person(tg, how, tg.staff_id in p.new) for tg, how in outcomes],
        }
        reached = [tg.staff_id for tg, how in outcomes if how in ("sent", "held")]
        log.info(
            "alert %d %s %s: paging %s",
            a.id,
            a.rule_id,
            label,
            ", ".join(reached[:MAX_NAMED]) or "nobody (already paged for its incident)",
        )
        self.history.note(
            a.id,
            "notified" if purpose == "notify" else "escalated",
            f"{label} → {named}{more}",
            data,
        )

    def _person(self, tg: Target, outcome: str, new: bool = True) -> dict[str, Any]:
        s = self.router.registry.staff.get(tg.staff_id)
        return {
            "staff_id": tg.staff_id,
            "name": s.name if s else tg.staff_id,
            "role": s.role if s else None,
            "reason": tg.reason,
            "new": new,
            "outcome": outcome,
        }


class Record:
    """What a notify worker reports of each attempt (on the dispatch thread): the alert's
    history, then the person's reachability; when nobody of a step can be reached, the next
    step is made due now (:meth:`__call__` says so: the dispatcher then takes it)."""

    def __init__(
        self,
        store: AlertStore,
        outbox: Outbox,
        timers: Timers,
        router: Router,
        history: History,
        reach: Reach,
        max_attempts: int,
    ) -> None:
        self.store, self.outbox, self.timers, self.router = store, outbox, timers, router
        self.history, self.reach, self.max_attempts = history, reach, max_attempts

    def __call__(self, d: Delivery, at: Attempt, now: float) -> bool:
        """Record one attempt; ``True`` when the next step of its alert is due now."""
        how = f"{d.staff_id} via {d.label}"
        if at.outcome == "sent":
            text = f"delivered to {how} ({d.purpose}, attempt {at.number})"
        elif at.outcome == "retrying":
            wait = (at.retry_at or at.at) - at.at
            text = (
                f"delivery to {how} failed: {at.error}; retrying in {wait:.0f} s "
                f"(attempt {at.number}/{self.max_attempts})"
            )
        else:
            text = f"delivery to {how} failed for good: {at.error} (attempt {at.number})"
        staff = self.router.registry.staff.get(d.staff_id)
        data = {
            "kind": "delivery",
            "staff_id": d.staff_id,
            "name": staff.name if staff else d.staff_id,
            "channel": d.label,
            "step": d.step + 1,
            "purpose": d.purpose,
            "outcome": "delivered" if at.outcome == "sent" else at.outcome,
            "attempt": at.number,
            "error": at.error,
        }
        self.history.note(d.alert_id, "notified", text, data)
        if d.purpose == "update" or at.outcome == "retrying":
            return False
        if at.outcome == "sent":
            self.reach.reachable(d.staff_id, now)
            if self.reach.anybody_unreached:
                self._someone_reached(d.alert_id, now)
            return False
        statuses = self.outbox.batch(d.alert_id, d.step, d.staff_id)
        if statuses and all(s == "failed" for s in statuses):
            try:
                a = self.store.get(d.alert_id)
            except AlertNotFound:
                return False
            self.reach.unreachable_now(d.staff_id, a, "every channel failed", now)
        step = self.outbox.batch(d.alert_id, d.step)
        if not (
            step
            and all(s == "failed" for s in step)
            and self.timers.hasten(d.alert_id, d.step + 1, now)
        ):
            return False
        self.history.note(
            d.alert_id, "escalated", f"nobody of step {d.step + 1} can be reached: next step now"
        )
        return True

    def _someone_reached(self, alert_id: int, now: float) -> None:
        try:
            a = self.store.get(alert_id)
        except AlertNotFound:
            return
        self.reach.someone_reached(a, now)


class FollowUp:
    """After an acknowledgement or a resolve: tell those who got an alarm that someone acted on
    it (not when the rule cleared it and its incident did not change)."""

    def __init__(
        self,
        db: Writer,
        outbox: Outbox,
        router: Router,
        coalescer: Coalescer,
        wording: Wording,
        submit: Submit,
    ) -> None:
        self.db, self.outbox, self.router, self.gate = db, outbox, router, coalescer
        self.wording, self.submit = wording, submit

    def __call__(self, item: Item) -> Item:
        a, change = item.alert, item.change
        assert change is not None
        moved = item.moved
        changed = moved is not None and moved[0] != moved[1]
        if a.signal == "alarm" and (change.entry.by != RULE or changed or moved is None):
            self.follow_up(a, change.entry.by, item.now)
        return item

    def follow_up(self, a: Alert, by: str, now: float) -> None:
        """Tell those who got the alarm that someone acted on it."""
        reached = sorted(
            {
                d.staff_id
                for d in self.outbox.of_alert(a.id)
                if d.status == "sent" and d.purpose != "update"
            }
            - {by}
        )
        reg = self.router.registry.staff
        msg = render(
            a,
            self.wording.language,
            self.wording.base_url,
            self.wording.tz,
            Context("update", by=by, status=a.status),
        )
        prio = 90
        ids: list[int] = []
        with self.db.tx() as db:
            self.gate.lock(db, reached)
            for sid in reached:
                if sid not in reg:
                    continue
                how, at = self.gate.decide(db, a, sid, "update", False, msg, now, prio)
                if how not in ("sent", "held"):
                    continue
                ids += add(
                    db,
                    alert_id=a.id,
                    staff_id=sid,
                    channels=reg[sid].channels,
                    step=-1,
                    purpose="update",
                    reason=update_reason(a.status, by),
                    priority=prio,
                    title=msg.title,
                    body=msg.body,
                    now=now,
                    next_at=at,
                )
        self.submit(ids)


_OUTCOME_NOTE: Final[dict[str, str]] = {
    "sent": "",
    "held": "; folded into one message, sent shortly",
    "merged": "; folded into the message waiting for them",
    "coalesced": "; already paged for this incident",
    "reminded": "; reminded less than a minute ago",
}

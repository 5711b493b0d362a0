"""Paging: one escalation step taken for one alert — who, what message, the outbox rows and the
history — and what came of each delivery (reachability of the person, follow-ups).

A step is taken by a compare-and-set on its timer row in the transaction that writes the step's
outbox rows (:class:`alerts.escalation.Timers`), so it is taken once, whoever polls.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Final
from zoneinfo import ZoneInfo

from alerts.db import Writer, severity_rank, signal_rank
from alerts.escalation import Chain, Chains, Timer, Timers
from alerts.lifecycle import AlertStore
from alerts.messages import Context, Language, Purpose, render
from alerts.model import SYSTEM, Alert, AlertChange, AlertNotFound, NoteAction
from alerts.notify import Notifier
from alerts.outbox import Attempt, Delivery, Outbox, add
from alerts.planning import Plan, plan, urgent
from alerts.routing import Router, Target
from alerts.throttle import Coalescer
from rules.transitions import Transition

log = logging.getLogger(__name__)

HALF_HOUR = 1800.0
UNREACHABLE = "staff_unreachable"
NOBODY = "nobody_reached"
MAX_NAMED = 12


class Pager:
    def __init__(
        self,
        store: AlertStore,
        db: Writer,
        chains: Chains,
        router: Router,
        outbox: Outbox,
        timers: Timers,
        *,
        language: Language,
        base_url: str,
        tz: ZoneInfo,
        community: str,
        max_attempts: int,
        clock: Callable[[], float],
        poll: Callable[[float], object],
    ) -> None:
        self.store, self.db, self.chains, self.router = store, db, chains, router
        self.outbox, self.timers = outbox, timers
        self.language, self.base_url, self.tz = language, base_url, tz
        self.community, self.max_attempts = community, max_attempts
        self.clock, self.poll = clock, poll
        self.notifier: Notifier | None = None
        opened = store.open_alerts()
        self._unreachable = {a.device_id for a in opened if a.rule_id == UNREACHABLE}
        self._nobody = {a.device_id for a in opened if a.rule_id == NOBODY}
        self.gate = Coalescer(store)
        self._later: dict[tuple[object, ...], tuple[float, float | None]] = {}

    def _submit(self, ids: list[int]) -> None:
        if self.notifier is not None:
            self.notifier.submit(ids)

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
                self.language,
                self.base_url,
                self.tz,
                Context(purpose, min(p.step, n - 1), n, now - a.raised_at),
            )
            prio = signal_rank(a.signal) * 10 + severity_rank(a.severity)
            outcomes: list[tuple[Target, str]] = []
            with self.db.tx() as db:
                moved = (
                    Timers.finish(db, t)
                    if nxt is None
                    else Timers.move(db, t, now, step=next_step, due_at=nxt)
                )
                if not moved:
                    return  # another poller took this step
                ids: list[int] = []
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
            self._record(a, p, n, outcomes, purpose, paged, later)
            self._submit(ids)
            if nxt is None or nxt > now:
                return
            t = Timer(t.alert_id, chain.id, "chain", next_step, t.started_at, nxt, None)

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
            self.note(a.id, "notified" if sk.step == 0 else "escalated", text, data)
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
                self.note(a.id, "escalated", text, data | {"kind": "skipped", "why": who})
                return
            text += ": reached nobody"
            if later is not None:
                when = datetime.fromtimestamp(later, self.tz).strftime("%a %H:%M")
                text += f" yet; paging when someone is on duty ({when})"
                data["retry_at"] = later
            self.note(a.id, "unreached", text, data)
            log.warning("alert %d (%s) %s", a.id, a.rule_id, text)
            self.nobody_now(a, now=self.clock())
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
        self.note(
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

    def nobody_now(self, a: Alert, now: float) -> None:
        """``a`` reached nobody: a trouble alert for its route (not about paging itself)."""
        if a.rule_id in (UNREACHABLE, NOBODY):
            return
        self._nobody.add(a.route)
        self.apply(_nobody(a, self.community, now, "fire"))

    # ------------------------------------------------------------------ deliveries

    def on_result(self, d: Delivery, at: Attempt) -> None:
        """A worker reports an attempt: history, then reachability of the person."""
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
        self.note(d.alert_id, "notified", text, data)
        if d.purpose == "update" or at.outcome == "retrying":
            return
        now = self.clock()
        if at.outcome == "sent":
            if d.staff_id in self._unreachable:
                self._unreachable.discard(d.staff_id)
                self.apply(_unreachable(d.staff_id, self.community, now, "clear"))
            if self._nobody:
                self._someone_reached(d.alert_id, now)
            return
        statuses = self.outbox.batch(d.alert_id, d.step, d.staff_id)
        if statuses and all(s == "failed" for s in statuses):
            try:
                a = self.store.get(d.alert_id)
            except AlertNotFound:
                return
            self.unreachable_now(d.staff_id, a, "every channel failed", now)
        step = self.outbox.batch(d.alert_id, d.step)
        if (
            step
            and all(s == "failed" for s in step)
            and self.timers.hasten(d.alert_id, d.step + 1, now)
        ):
            self.note(
                d.alert_id,
                "escalated",
                f"nobody of step {d.step + 1} can be reached: next step now",
            )
            self.poll(now)

    def _someone_reached(self, alert_id: int, now: float) -> None:
        try:
            a = self.store.get(alert_id)
        except AlertNotFound:
            return
        if a.route in self._nobody and a.rule_id != NOBODY:
            self._nobody.discard(a.route)
            self.apply(_nobody(a, self.community, now, "clear"))

    def unreachable_now(self, staff_id: str, a: Alert, why: str, now: float) -> None:
        self.note(a.id, "notified", f"{staff_id} cannot be reached: {why}")
        if a.rule_id == UNREACHABLE:
            return  # no trouble about the trouble
        self._unreachable.add(staff_id)
        self.apply(_unreachable(staff_id, self.community, now, "fire"))

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
            self.language,
            self.base_url,
            self.tz,
            Context("update", by=by, status=a.status),
        )
        prio = 90
        ids: list[int] = []
        with self.db.tx() as db:
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
                    reason=f"was paged; {a.status} by {by}",
                    priority=prio,
                    title=msg.title,
                    body=msg.body,
                    now=now,
                    next_at=at,
                )
        self._submit(ids)

    def apply(self, t: Transition) -> AlertChange | None:
        try:
            return self.store.apply(t)
        except Exception:
            log.exception("paging: the store refused %s for %s", t.rule_id, t.device_id)
            return None

    def note(
        self, alert_id: int, action: NoteAction, text: str, data: dict[str, Any] | None = None
    ) -> None:
        with contextlib.suppress(AlertNotFound):
            self.store.add_note(alert_id, SYSTEM, text, action, data)


def _unreachable(staff_id: str, community: str, now: float, action: str) -> Transition:
    return Transition(
        action="fire" if action == "fire" else "clear",
        rule_id=UNREACHABLE,
        device_id=staff_id,
        kind="staff",
        severity="major",
        signal="trouble",
        route="operator",
        at=now,
        summary="A staff member cannot be reached on any channel",
        labels={"community": community, "staff_id": staff_id},
    )


def _nobody(a: Alert, community: str, now: float, action: str) -> Transition:
    """One open ``nobody_reached`` per route: alerts of it were paged to nobody."""
    return Transition(
        action="fire" if action == "fire" else "clear",
        rule_id=NOBODY,
        device_id=a.route,
        kind="system",
        severity="major" if urgent(a) else "minor",
        signal="trouble",
        route="operator",
        at=now,
        summary=f"Alerts of route {a.route} reached nobody: nobody on duty for them",
        labels={"community": community, "route": a.route},
    )


_OUTCOME_NOTE: Final[dict[str, str]] = {
    "sent": "",
    "held": "; folded into one message, sent shortly",
    "merged": "; folded into the message waiting for them",
    "coalesced": "; already paged for this incident",
    "reminded": "; reminded less than a minute ago",
}

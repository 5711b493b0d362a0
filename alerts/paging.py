"""Paging: one escalation step taken for one alert — who, what message, the outbox rows and the
history — and what came of each delivery (reachability of the person, follow-ups).

A step is taken by a compare-and-set on its timer row in the transaction that writes the step's
outbox rows (:class:`alerts.escalation.Timers`), so it is taken once, whoever polls.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from zoneinfo import ZoneInfo

from alerts.db import Writer, severity_rank, signal_rank
from alerts.escalation import Chains, Timer, Timers
from alerts.lifecycle import AlertStore
from alerts.messages import Context, Language, Purpose, render
from alerts.model import SYSTEM, Alert, AlertChange, AlertNotFound, NoteAction
from alerts.notify import Notifier
from alerts.outbox import Attempt, Delivery, Outbox, add
from alerts.routing import Router, Target
from rules.matches import Transition

log = logging.getLogger(__name__)

UNREACHABLE = "staff_unreachable"
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
        self._unreachable = {a.device_id for a in store.open_alerts() if a.rule_id == UNREACHABLE}

    def _submit(self, ids: list[int]) -> None:
        if self.notifier is not None:
            self.notifier.submit(ids)

    def take(self, a: Alert, t: Timer, now: float) -> None:
        chain = self.chains.get(t.chain_id) or self.chains.select(a)
        n = len(chain.steps)
        for _ in range(n + 1):
            step = chain.step(t.step)
            targets = self.router.resolve(step.to, a, now)
            nxt = chain.due(t.step + 1, t.started_at, max(t.due_at, now))
            if not any(tg.channels for tg in targets) and t.step + 1 < n:
                nxt = now  # nobody on duty (or with a channel) for this step: the next one now
            purpose: Purpose = "notify" if t.step == 0 else "escalate" if t.step < n else "repeat"
            msg = render(
                a,
                self.language,
                self.base_url,
                self.tz,
                Context(purpose, min(t.step, n - 1), n, now - a.raised_at),
            )
            prio = signal_rank(a.signal) * 10 + severity_rank(a.severity)
            with self.db.tx() as db:
                moved = (
                    Timers.finish(db, t)
                    if nxt is None
                    else Timers.move(db, t, now, step=t.step + 1, due_at=nxt)
                )
                if not moved:
                    return  # another poller took this step
                ids = [
                    i
                    for tg in targets
                    for i in add(
                        db,
                        alert_id=a.id,
                        staff_id=tg.staff_id,
                        channels=tg.channels,
                        step=t.step,
                        purpose=purpose,
                        reason=tg.reason,
                        priority=prio,
                        title=msg.title,
                        body=msg.body,
                        now=now,
                    )
                ]
            self._record(a, t.step, n, step.to, targets, purpose)
            self._submit(ids)
            if nxt is None or nxt > now:
                return
            t = Timer(t.alert_id, chain.id, "chain", t.step + 1, t.started_at, nxt, None)

    def _record(
        self,
        a: Alert,
        step: int,
        n: int,
        selectors: Sequence[str],
        targets: Sequence[Target],
        purpose: str,
    ) -> None:
        label = f"step {step + 1}/{n}" if step < n else f"repeat {step - n + 1}"
        if not targets:
            text = f"{label}: nobody on duty for {', '.join(selectors)}"
        else:
            named = "; ".join(
                f"{tg.staff_id} ({tg.reason}{'' if tg.channels else '; no notification channel'})"
                for tg in targets[:MAX_NAMED]
            )
            more = f"; and {len(targets) - MAX_NAMED} more" if len(targets) > MAX_NAMED else ""
            text = f"{label} → {named}{more}"
        self.note(a.id, "notified" if purpose == "notify" else "escalated", text)

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
        self.note(d.alert_id, "notified", text)
        if d.purpose == "update" or at.outcome == "retrying":
            return
        now = self.clock()
        if at.outcome == "sent":
            if d.staff_id in self._unreachable:
                self._unreachable.discard(d.staff_id)
                self.apply(_unreachable(d.staff_id, self.community, now, "clear"))
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
        with self.db.tx() as db:
            ids = [
                i
                for sid in reached
                if sid in reg
                for i in add(
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
                )
            ]
        self._submit(ids)

    def apply(self, t: Transition) -> AlertChange | None:
        try:
            return self.store.apply(t)
        except Exception:
            log.exception("paging: the store refused %s for %s", t.rule_id, t.device_id)
            return None

    def note(self, alert_id: int, action: NoteAction, text: str) -> None:
        with contextlib.suppress(AlertNotFound):
            self.store.add_note(alert_id, SYSTEM, text, action)


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

"""A follow-up held by the throttle says what is true when it goes out: an acknowledgement
still waiting when the alert is resolved becomes the resolve notice, its words and its
receipt's reason both."""

from __future__ import annotations

from pathlib import Path

from tests.alerting import FakeClock, FakeSender, dispatcher, fire, settle
from tests.unit.test_incidents import run_for


def test_an_acknowledgement_held_then_resolved_goes_out_as_the_resolve(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        change = d.store.apply(fire("smoke_alarm", "smk-101", clock()))
        assert change is not None
        alert_id = change.alert.id
        settle(d)
        assert [t for _, t, _ in sender.to("sec-C01")] == ["【紧急】烟雾报警"]
        run_for(d, clock, 2)
        d.store.acknowledge(alert_id, "sec-desk", "on my way")  # within 15 s: held
        settle(d)
        run_for(d, clock, 2)
        assert len(sender.to("sec-C01")) == 1
        d.store.resolve(alert_id, "sec-desk", "burnt toast", false_alarm=True)
        settle(d)
        run_for(d, clock, 20)
        (_, title, body) = sender.to("sec-C01")[1]
        assert len(sender.to("sec-C01")) == 2
        assert title == "【已解除】烟雾报警"
        assert "处理人：sec-desk" in body
        assert "已确认" not in title + body  # the stale acknowledgement is gone
        updates = [
            r for r in d.outbox.of_alert(alert_id) if r.purpose == "update" and r.status == "sent"
        ]
        assert {r.staff_id for r in updates} >= {"sec-C01", "care-1"}
        assert {r.reason for r in updates} == {"was paged; resolved by sec-desk"}


def test_a_fire_confirmed_while_the_acknowledgement_waits_still_leads_after_the_resolve(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        first = d.store.apply(fire("smoke_alarm", "smk-101", clock()))
        assert first is not None
        settle(d)
        run_for(d, clock, 2)
        d.store.acknowledge(first.alert.id, "sec-desk", "on my way")  # held for the guard
        settle(d)
        run_for(d, clock, 2)
        d.store.apply(fire("smoke_alarm", "smk-102", clock()))  # confirmed: folded, leads
        settle(d)
        run_for(d, clock, 2)
        d.store.resolve(first.alert.id, "sec-desk", "one detector was burnt toast")
        settle(d)
        run_for(d, clock, 20)
        to_guard = sender.to("sec-C01")
        assert len(to_guard) == 2, to_guard
        (_, title, body) = to_guard[1]
        assert "火警确认" in title  # the confirmation still leads
        assert "+ 【已解除】烟雾报警" in body.splitlines()  # the resolve follows it

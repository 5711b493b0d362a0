"""Escalation timelines on a fake clock: steps on time, acknowledgement stops them, restarts
neither lose nor repeat a step, and chain files are validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts import AlertStore
from alerts.config import EscalationConfig, NotifyConfig
from alerts.dispatch import Config, Dispatcher
from alerts.escalation import ChainFileError, load_chains
from alerts.notify import SendResult
from tests.alerting import (
    NIGHT,
    RULES,
    FakeClock,
    FakeSender,
    community,
    dispatcher,
    fire,
    notes,
    settle,
)


def raise_alert(d: Dispatcher, rule: str, device: str) -> int:
    change = d.store.apply(fire(rule, device, d.clock()))
    assert change is not None
    settle(d)
    return change.alert.id


def who(sender: FakeSender) -> list[str]:
    return [url.removeprefix("fake://") for url, _, _ in sender.sent]


def test_a_fall_goes_to_the_primary_caretaker_then_higher_up_minutes_apart(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        alert_id = raise_alert(d, "wearable_fall", "wr-1")
        assert who(sender) == ["care-1"]
        title, body = sender.sent[0][1:]
        assert "跌倒" in title and "B01楼" in body and f"/#/alerts/{alert_id}" in body
        clock.advance(179)
        assert d.poll() == 0 and len(sender.sent) == 1  # not due yet
        clock.advance(1)
        d.poll()
        settle(d)
        # reminded, and the second caretaker: one step, sent at once on two channels by the
        # notifier's workers in parallel, so in either order (the step's note gives the order)
        assert sorted(who(sender)[1:]) == ["care-1", "care-2"]
        clock.advance(180)
        d.poll()
        settle(d)
        # step 3 (own + building duty caretakers) would reach nobody new: step 4 comes at once
        assert sorted(who(sender)[3:]) == ["care-1", "care-2", "sec-desk"]
        history = notes(d, alert_id, "notified", "escalated")
        assert "step 3/4: everyone on duty already paged (care-1, care-2); next step now" in (
            history
        )
        assert history[0] == "step 1/4 → care-1 (the resident's primary caretaker, on duty)"
        assert any(
            n.startswith("step 2/4 → care-1") and "care-2 (the resident's caretaker 2" in n
            for n in history
        )
        assert any(
            n.startswith("step 4/4") and "sec-desk (security desk on duty)" in n for n in history
        )
        clock.advance(299)
        assert d.poll() == 0  # the repeat counts from step 4, taken at 6 min
        clock.advance(1)
        d.poll()
        settle(d)
        assert any(n.startswith("repeat 1 →") for n in notes(d, alert_id, "escalated"))
        assert "再次提醒" in sender.sent[-1][1]


def test_acknowledging_stops_the_escalation_and_cancels_what_was_not_sent(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        alert_id = raise_alert(d, "wearable_fall", "wr-1")
        d.store.acknowledge(alert_id, "care-1", "on my way")
        settle(d)
        assert d.timers.get(alert_id) is None
        clock.advance(3600)
        d.poll()
        settle(d)
        assert who(sender) == ["care-1"]


def test_nobody_on_duty_for_a_step_moves_to_the_next_one_at_once(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(NIGHT), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        alert_id = raise_alert(d, "wearable_fall", "wr-2")  # r-2's only caretaker is off duty
        assert who(sender) == ["care-night"]  # building duty caretaker, step 3, now
        history = notes(d, alert_id, "notified", "escalated")
        assert history[0] == "step 1/4: nobody on duty for own_caretaker:1"
        assert history[1].startswith("step 2/4: nobody on duty")
        timer = d.timers.get(alert_id)
        assert timer is not None and timer.step == 3 and timer.due_at == NIGHT + 540


def test_a_restart_mid_escalation_takes_the_next_step_on_time_and_never_twice(
    alerts_at: Path | str,
) -> None:
    db = alerts_at
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(db, clock, sender) as d:
        alert_id = raise_alert(d, "wearable_fall", "wr-1")
    assert who(sender) == ["care-1"]
    # the service is down for two minutes; then two processes start on the same files (an
    # old one not yet gone and the new one) and both poll when the step is due
    clock.advance(120)
    other = FakeSender()
    with dispatcher(db, clock, sender) as d1, dispatcher(db, clock, other) as d2:
        assert d1.poll() == 0 and d2.poll() == 0
        clock.advance(60)
        d1.poll()
        d2.poll()
        settle(d1)
        settle(d2)
        second = sorted(who(sender)[1:] + who(other))
        assert second == ["care-1", "care-2"]  # step 2 once, whoever took it
        taken = [n for n in notes(d1, alert_id, "escalated") if n.startswith("step 2/4")]
        assert len(taken) == 1
    # a restart long after: the overdue steps come at once, in order, each once
    clock.advance(3600)
    with dispatcher(db, clock, sender) as d:
        d.poll()
        settle(d)
        steps = [
            n.split(" →")[0].split(":")[0]
            for n in notes(d, alert_id, "notified", "escalated")
            if n.startswith(("step", "repeat"))
        ]
        assert steps == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
        clock.advance(299)
        assert d.poll() == 0  # repeats count from now, not from the missed times
        clock.advance(1)
        d.poll()
        settle(d)
        assert notes(d, alert_id, "escalated")[-1].startswith("repeat 1 →")


def test_an_alert_raised_just_before_a_crash_is_paged_on_restart(
    alerts_at: Path | str,
) -> None:
    db = alerts_at
    clock, sender = FakeClock(), FakeSender()
    store = AlertStore(db, clock=clock)
    change = store.apply(fire("smoke_alarm", "smk-101"))  # committed; no dispatcher yet
    store.close()
    assert change is not None
    with dispatcher(db, clock, sender) as d:
        settle(d)
        assert "sec-C01" in who(sender) and "sec-desk" in who(sender)


def test_a_person_nobody_can_reach_is_a_trouble_alert_and_the_next_step_comes_now(
    alerts_at: Path | str,
) -> None:
    clock = FakeClock()
    sender = FakeSender(results={"fake://care-1": [SendResult(False, False, "error=404.")]})
    with dispatcher(alerts_at, clock, sender) as d:
        alert_id = raise_alert(d, "wearable_fall", "wr-1")
        sender.wait(lambda: "care-2" in who(sender))
        settle(d)
        troubles, _ = d.store.find(rule_id="staff_unreachable")
        assert [(t.device_id, t.route, t.signal) for t in troubles] == [
            ("care-1", "operator", "trouble")
        ]
        assert "ops-1" in who(sender)
        history = notes(d, alert_id)
        assert any("failed for good: error=404." in n for n in history)
        assert "care-1 cannot be reached: every channel failed" in history
        assert "nobody of step 1 can be reached: next step now" in history
        # a later delivery to care-1 works: the trouble clears
        d.store.acknowledge(alert_id, "care-2")
        raise_alert(d, "wearable_sos", "wr-1")
        sender.wait(lambda: who(sender).count("care-1") >= 1)
        settle(d)
        assert d.store.find(rule_id="staff_unreachable")[0][0].status == "resolved"


def test_a_retryable_failure_is_retried_with_backoff(
    alerts_at: Path | str,
) -> None:
    clock = FakeClock()
    down = SendResult(False, True, "A Connection error occurred")
    sender = FakeSender(results={"fake://care-1": [down, down]})
    with dispatcher(alerts_at, clock, sender, notify=NotifyConfig(backoff_s=2.0)) as d:
        alert_id = raise_alert(d, "wearable_fall", "wr-1")
        sender.wait(lambda: len(sender.calls) == 1)
        clock.advance(2)
        d.notifier.kick()
        sender.wait(lambda: len(sender.calls) == 2)
        clock.advance(3)
        d.notifier.kick()
        assert len(sender.calls) == 2  # the second wait is 4 s
        clock.advance(1)
        d.notifier.kick()
        sender.wait(lambda: who(sender) == ["care-1"])
        settle(d)
        (delivery,) = d.outbox.of_alert(alert_id)
        assert (delivery.status, delivery.attempts) == ("sent", 3)
        outcomes = [r["outcome"] for r in d.outbox.attempts([delivery.id])[delivery.id]]
        assert outcomes == ["retrying", "retrying", "sent"]
        history = notes(d, alert_id, "notified")
        assert any("retrying in 2 s (attempt 1/5)" in n for n in history)
        assert any("retrying in 4 s (attempt 2/5)" in n for n in history)


def test_a_hung_channel_never_delays_the_others(
    alerts_at: Path | str,
) -> None:
    import threading

    clock, hang = FakeClock(), threading.Event()
    sender = FakeSender(block={"fake://sec-C01": hang})
    try:
        with dispatcher(alerts_at, clock, sender, notify=NotifyConfig(workers=2)) as d:
            d.store.apply(fire("smoke_alarm", "smk-101"))
            d.store.apply(fire("smoke_alarm", "smk-B02-5"))
            # sec-C01's channel hangs on the first message; everyone else gets both alarms
            sender.wait(lambda: who(sender).count("sec-desk") == 2)
            assert who(sender).count("sec-C02") == 2 and "sec-C01" not in who(sender)
            hang.set()
            sender.wait(lambda: who(sender).count("sec-C01") == 2)
    finally:
        hang.set()


def test_chain_files_are_validated_with_errors_naming_file_chain_and_field(
    tmp_path: Path,
) -> None:
    assert [c.id for c in load_chains().chains][:2] == ["fall-sos", "fire"]
    bad = tmp_path / "chains.yaml"
    bad.write_text(
        "chains:\n"
        "  - id: x\n    match: {routes: [caretaker]}\n"
        "    steps: [{to: [own_caretaker:1]}, {after: 1m, to: [janitor]}]\n"
        "  - id: y\n    steps: [{after: 5m, to: [manager]}, {after: 1m, to: [manager]}]\n"
    )
    with pytest.raises(ChainFileError) as e:
        load_chains(bad)
    text = str(e.value)
    assert f"{bad}: chain 'x' (#1): field 'steps.1.to.0'" in text
    assert f"{bad}: chain 'y' (#2)" in text and "earlier than the step before" in text
    partial = tmp_path / "partial.yaml"
    partial.write_text(
        "chains:\n  - id: z\n    match: {routes: [caretaker]}\n"
        "    steps: [{to: [own_caretakers]}]\n"
    )
    with pytest.raises(ChainFileError, match="no chain matches every alert of route 'security'"):
        load_chains(partial)


def test_a_custom_chain_file_is_used(alerts_at: Path | str, tmp_path: Path) -> None:
    f = tmp_path / "chains.yaml"
    f.write_text("chains:\n  - id: everyone\n    steps: [{to: ['staff:ops-1']}]\n")
    clock, sender = FakeClock(), FakeSender()
    store = AlertStore(alerts_at, clock=clock)
    config = Config(sender=sender, escalation=EscalationConfig(file=f))
    d = Dispatcher(store, community(), RULES, config, clock)
    d.start()
    try:
        store.apply(fire("wearable_fall", "wr-1"))
        settle(d)
        assert who(sender) == ["ops-1"]
    finally:
        d.stop()
        store.close()


def test_without_staff_nothing_is_paged_and_a_person_without_a_channel_is_passed_over(
    tmp_path: Path,
) -> None:
    from registry.models import Registry

    clock, sender = FakeClock(), FakeSender()
    with dispatcher(tmp_path / "a.db", clock, sender, registry=Registry("y")) as d:
        alert_id = raise_alert(d, "wearable_fall", "wr-1")
        assert [h.action for h in d.store.get(alert_id).history] == ["raised"]
        assert d.timers.get(alert_id) is None
    reg = community()
    reg.staff["care-1"] = reg.staff["care-1"].model_copy(update={"channels": ()})
    with dispatcher(tmp_path / "b.db", clock, sender, registry=reg) as d:
        alert_id = raise_alert(d, "wearable_fall", "wr-1")
        assert who(sender) == ["care-2"]  # step 2 at once
        first = notes(d, alert_id, "notified")[0]
        assert first == (
            "step 1/4 → care-1 (the resident's primary caretaker, on duty; no notification channel)"
        )

"""Incidents on a fake clock: the alerts of one fire are one incident and one page per person
(an update when it gets worse or is acted on, never more than two messages a minute), a
confirmed fire resolves when its detectors clear — also when they cleared while the service
was down — and every alert kind has a title in both languages."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from alerts import AlertStore
from alerts.config import GroupConfig
from alerts.messages import SYSTEM_ALERTS, TITLES
from tests.alerting import (
    NIGHT,
    RULES,
    FakeClock,
    FakeSender,
    clear,
    dispatcher,
    fire,
    notes,
    settle,
)

GUARDS = ("sec-C01", "sec-C02", "sec-desk")


def per_guard(sender: FakeSender) -> Counter[str]:
    return Counter(
        u.removeprefix("fake://") for u, _, _ in sender.sent if u.startswith("fake://sec-")
    )


def run_for(d: object, clock: FakeClock, seconds: int) -> None:
    """Let ``seconds`` of fake time pass, one second at a time, as the scheduler would."""
    from alerts.dispatch import Dispatcher

    assert isinstance(d, Dispatcher)
    for _ in range(seconds):
        clock.advance(1)
        d.poll()
        d.notifier.kick()
        settle(d)


def test_a_fire_of_two_detectors_is_one_incident_and_two_messages_per_guard_in_a_minute(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        first = d.store.apply(fire("smoke_alarm", "smk-101", clock()))
        settle(d)
        assert first is not None
        # the first page never waits: every guard has it before any time passes
        assert per_guard(sender) == dict.fromkeys(GUARDS, 1)
        run_for(d, clock, 4)
        d.store.apply(fire("smoke_alarm", "smk-102", clock()))  # the same floor: confirmed
        settle(d)
        (confirmed,) = d.store.find(rule_id="fire_confirmed")[0]
        smoke = d.store.find(rule_id="smoke_alarm")[0]
        ids = {a.incident_id for a in [*smoke, confirmed]}
        assert len(ids) == 1 and None not in ids
        (incident_id,) = ids
        assert incident_id is not None
        inc = d.store.incident(incident_id)
        assert inc is not None
        assert (inc.status, inc.severity, inc.title_key, inc.building) == (
            "firing",
            "critical",
            "smoke_alarm",
            "B01",
        )
        assert sorted(inc.alert_ids) == sorted([*(a.id for a in smoke), confirmed.id])
        run_for(d, clock, 56)  # the rest of the first minute
        counts = per_guard(sender)
        assert counts == dict.fromkeys(GUARDS, 2), counts
        titles = [t for u, t, _ in sender.sent if u == "fake://sec-desk"]
        assert "烟雾报警" in titles[0] and "火警确认" in titles[1]
        # the second detector's alarm was news to nobody: recorded as folded, not sent
        second = next(a for a in smoke if a.device_id == "smk-102")
        step = notes(d, second.id, "notified")
        assert any("already paged for this incident" in n for n in step)
        page = next(
            h.data for h in d.store.get(second.id).history if h.data and h.data["kind"] == "page"
        )
        assert {p["outcome"] for p in page["people"] if p["staff_id"] in GUARDS} == {"coalesced"}


def test_acting_on_the_fire_and_its_all_clear_are_one_update_each(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        d.store.apply(fire("smoke_alarm", "smk-101", clock()))
        d.store.apply(fire("smoke_alarm", "smk-102", clock()))
        settle(d)
        run_for(d, clock, 120)
        before = per_guard(sender)
        alerts = d.store.open_alerts()
        fire_ids = [a.id for a in alerts if a.incident_id == alerts[0].incident_id]
        for alert_id in fire_ids:  # the desk acknowledges all three at once
            d.store.acknowledge(alert_id, "sec-desk")
        settle(d)
        inc = d.store.incident(alerts[0].incident_id or 0)
        assert inc is not None and inc.status == "acknowledged"
        run_for(d, clock, 60)
        after = per_guard(sender)
        assert after["sec-C01"] - before["sec-C01"] <= 2  # folded: at most two a minute
        assert after["sec-desk"] == before["sec-desk"]  # who acted is not told
        for device in ("smk-101", "smk-102"):
            d.store.apply(clear("smoke_alarm", device, clock()))
        settle(d)
        inc = d.store.incident(alerts[0].incident_id or 0)
        assert inc is not None and inc.status == "resolved"
        confirmed = d.store.find(rule_id="fire_confirmed")[0][0]
        assert (confirmed.status, confirmed.resolved_by) == ("resolved", "rule")


def test_a_confirmed_fire_whose_detectors_cleared_while_the_service_was_down_resolves_on_start(
    alerts_at: Path | str,
) -> None:
    db = alerts_at
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(db, clock, sender) as d:
        d.store.apply(fire("smoke_alarm", "smk-101", clock()))
        d.store.apply(fire("smoke_alarm", "smk-102", clock()))
        settle(d)
        assert d.store.find(rule_id="fire_confirmed", open_only=True)[1] == 1
    # the detectors clear while nothing dispatches (the service down, or an older version)
    clock.advance(600)
    store = AlertStore(db, clock=clock)
    for device in ("smk-101", "smk-102"):
        assert store.apply(clear("smoke_alarm", device, clock())) is not None
    assert store.find(rule_id="fire_confirmed", open_only=True)[1] == 1
    store.close()
    with dispatcher(db, clock, sender) as d:
        settle(d)
        (confirmed,) = d.store.find(rule_id="fire_confirmed")[0]
        assert confirmed.status == "resolved" and confirmed.resolved_by == "rule"
        assert d.timers.get(confirmed.id) is None  # no escalation to the night manager


def test_a_fall_in_the_unit_with_a_smoke_alarm_joins_the_fire(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        fall = d.store.apply(fire("wearable_fall", "wr-1", clock()))
        settle(d)
        assert fall is not None
        alone = d.store.get(fall.alert.id).incident_id
        smoke = d.store.apply(fire("smoke_alarm", "smk-101", clock()))  # r-1's home
        settle(d)
        assert smoke is not None
        joined = d.store.get(fall.alert.id).incident_id
        assert joined == d.store.get(smoke.alert.id).incident_id and joined != alone
        assert d.store.incident(alone or 0) is None  # the fall's own incident is gone
        inc = d.store.incident(joined or 0)
        assert inc is not None and sorted(inc.alert_ids) == sorted([fall.alert.id, smoke.alert.id])


def test_many_devices_of_one_building_in_trouble_are_one_incident(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender, group=GroupConfig(threshold=3)) as d:
        for i in range(1, 5):
            d.store.apply(fire("smoke_silent", f"smk-B02-{i}", clock()))
        settle(d)
        run_for(d, clock, 61)
        (trouble,) = d.store.find(rule_id="building_trouble")[0]
        members = d.store.find(building="B02")[0]
        assert {a.incident_id for a in members} == {trouble.incident_id}
        assert [u for u, _, _ in sender.sent] == ["fake://ops-1"]  # one page


def test_an_alert_that_finds_nobody_on_duty_is_trouble_and_waits_for_the_next_shift(
    alerts_at: Path | str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alerts.paging")
    from registry.cells import parse_shift
    from tests.alerting import community

    reg = community()
    reg.staff["ops-1"] = reg.staff["ops-1"].model_copy(
        update={"shifts": (parse_shift("daily 08:00-17:00"),)}
    )
    clock, sender = FakeClock(NIGHT), FakeSender()  # 23:00: the operator is off duty
    with dispatcher(alerts_at, clock, sender, registry=reg) as d:
        low = d.store.apply(fire("smoke_low_battery", "smk-101", clock()))
        assert low is not None
        run_for(d, clock, 61)  # past the grouping wait
        history = d.store.get(low.alert.id).history
        (unreached,) = [h for h in history if h.action == "unreached"]
        assert "reached nobody yet; paging when someone is on duty" in unreached.note
        assert not any(h.action == "notified" and "→" in h.note for h in history)
        (trouble,) = d.store.find(rule_id="nobody_reached", open_only=True)[0]
        assert (trouble.device_id, trouble.route, trouble.signal) == (
            "operator",
            "operator",
            "trouble",
        )
        assert sender.sent == []
        said = [r.getMessage() for r in caplog.records if r.name == "alerts.paging"]
        assert any(f"alert {low.alert.id} (smoke_low_battery)" in m and "reached nobody" in m
                   for m in said)  # fmt: skip
        timer = d.timers.get(low.alert.id)
        assert timer is not None and timer.due_at == NIGHT + 9 * 3600  # 08:00
        clock.advance(9 * 3600)
        d.poll()
        d.notifier.kick()
        settle(d)
        sender.wait(lambda: any(u == "fake://ops-1" for u, _, _ in sender.sent))
        settle(d)
        said = [r.getMessage() for r in caplog.records if r.name == "alerts.paging"]
        assert any(f"alert {low.alert.id} smoke_low_battery" in m and "paging ops-1" in m
                   for m in said)  # fmt: skip
        assert d.store.get(trouble.id).status == "resolved"  # someone is reached again


def test_every_alert_kind_has_a_chinese_and_an_english_title() -> None:
    from alerts.correlation import FIRE_CONFIRMED
    from alerts.noise import BUILDING_TROUBLE
    from alerts.paging import NOBODY, UNREACHABLE
    from alerts.system import STORE_UNREACHABLE

    kinds = {r.id for r in RULES} | set(SYSTEM_ALERTS)
    assert {FIRE_CONFIRMED, BUILDING_TROUBLE, NOBODY, UNREACHABLE, STORE_UNREACHABLE.id} <= kinds
    missing = sorted(k for k in kinds if k not in TITLES)
    assert missing == []
    for k in kinds:
        zh, en = TITLES[k]
        assert any("\u4e00" <= c <= "\u9fff" for c in zh), k
        assert en.isascii() and en[0].isupper(), k


def test_what_comes_while_a_message_waits_is_folded_into_it_the_most_urgent_first(
    alerts_at: Path | str,
) -> None:
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        first = d.store.apply(fire("smoke_alarm", "smk-101", clock()))
        settle(d)
        assert first is not None
        run_for(d, clock, 4)
        d.store.apply(fire("smoke_alarm", "smk-102", clock()))  # confirmed: held 15 s
        settle(d)
        run_for(d, clock, 2)
        d.store.acknowledge(first.alert.id, "sec-desk", "on my way")  # an update: folded in
        settle(d)
        run_for(d, clock, 15)
        to_guard = [(t, b) for u, t, b in sender.sent if u == "fake://sec-C01"]
        assert len(to_guard) == 2, to_guard
        title, body = to_guard[1]
        assert "火警确认" in title  # the confirmation leads
        assert "+ 【已确认】烟雾报警" in body  # and the acknowledgement follows


def test_two_alarms_committed_while_nothing_dispatched_are_confirmed_and_paged_on_start(
    alerts_at: Path | str,
) -> None:
    """The process died after the rules worker committed two smoke alarms and before the
    dispatcher heard of them: on start the fire is still confirmed, and the desk paged."""
    db = alerts_at
    clock, sender = FakeClock(), FakeSender()
    store = AlertStore(db, clock=clock)  # committed, nobody subscribed: the crash window
    store.apply(fire("smoke_alarm", "smk-101", clock()))
    store.apply(fire("smoke_alarm", "smk-102", clock()))
    store.close()
    with dispatcher(db, clock, sender) as d:
        settle(d)
        (confirmed,) = d.store.find(rule_id="fire_confirmed", open_only=True)[0]
        assert confirmed.labels["devices"].split(",") == ["smk-101", "smk-102"]
        assert per_guard(sender)["sec-desk"] >= 1
        run_for(d, clock, 5)
        assert d.store.find(rule_id="fire_confirmed")[1] == 1  # once, however often it starts


def test_a_fire_at_home_of_a_fallen_resident_is_headed_by_the_fire(
    alerts_at: Path | str,
) -> None:
    """The guard reads the incident's title first: a fire threatens the whole building, so a
    fall that came a moment earlier in the same home must not title it."""
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        fall = d.store.apply(fire("wearable_fall", "wr-1", clock()))
        assert fall is not None
        settle(d)
        clock.advance(5)
        smoke = d.store.apply(fire("smoke_alarm", "smk-101", clock()))  # r-1's home
        assert smoke is not None
        settle(d)
        raised = d.store.get(fall.alert.id)
        incident_id = d.store.get(smoke.alert.id).incident_id
        assert raised.incident_id == incident_id  # the fall is in the fire's incident
        inc = d.store.incident(incident_id or 0)
        assert inc is not None
        assert (inc.group_key, inc.severity, inc.title_key, inc.headline_id) == (
            "fire:B01",
            "critical",
            "smoke_alarm",
            smoke.alert.id,
        )
        assert fall.alert.id in inc.alert_ids

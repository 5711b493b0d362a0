"""A resident down in a burning home: the guards paged about the fire are told of her (place and
kind, no name, no value) whichever came first, once each; the caretakers' pages stay as they
were; the guard's scope then shows the alert, without its value."""

from __future__ import annotations

from pathlib import Path

from alerts.dispatch import Dispatcher
from alerts.fire_residents import FOLDED
from alerts.model import Alert
from jiayuan.auth.scope import Principal, Scopes
from registry.models import Registry
from tests.alerting import FakeClock, FakeSender, community, dispatcher, fire, settle

NAME = "王秀英"
GUARDS = ("sec-C01", "sec-C02", "sec-desk")  # the smoke alarm pages the whole security roster
CARETAKERS = ("care-1", "care-2", "care-3", "care-night")
TOLD = "住户在家中：跌倒报警"


def named() -> Registry:
    """The test community, r-1 (wr-1, 1-1-101 in B01, where smk-101 is) with a name."""
    reg = community()
    residents = [
        r.model_copy(update={"display_name": NAME}) if r.resident_id == "r-1" else r
        for r in reg.residents.values()
    ]
    return Registry(
        "y",
        buildings=list(reg.buildings.values()),
        devices=list(reg.devices.values()),
        residents=residents,
        staff=list(reg.staff.values()),
    )


def told(sender: FakeSender, staff_id: str) -> list[tuple[str, str, str]]:
    return [m for m in sender.to(staff_id) if TOLD in m[1]]


def guard_sees(d: Dispatcher, registry: Registry, staff_id: str, alert: Alert) -> bool:
    scope = Scopes(registry).of(Principal(staff_id, "security", staff_id, "session"))
    return d.store.admits(scope.audience, alert)


def check_guards_told(d: Dispatcher, sender: FakeSender, reg: Registry, fall_id: int) -> None:
    """Each guard got one update about the fall (no name, no value), sees the fall without its
    value; no caretaker got the update."""
    clock = d.clock
    assert isinstance(clock, FakeClock)
    clock.advance(16)  # a guard paged a moment ago: the update waits out the coalescing window
    d.notifier.kick()
    sender.wait(lambda: all(told(sender, g) for g in GUARDS))
    settle(d)
    fall = d.store.get(fall_id)
    assert (fall.severity, fall.labels["correlated"]) == ("critical", "smoke_alarm")
    for g in GUARDS:
        ((_, title, body),) = told(sender, g)
        assert "B01楼 1-1-101室" in title, title
        for text in (title, body):
            assert NAME not in text and "r-1" not in text and "88" not in text, text
        for _, t, b in sender.to(g):  # nothing else a guard got names her or carries a value
            assert NAME not in t + b and "88" not in t + b
        assert guard_sees(d, reg, g, fall)
        scope = Scopes(reg).of(Principal(g, "security", g, "session"))
        assert scope.redact(fall).value is None
        assert fall.id in {a.id for a in d.store.find(audience=scope.audience)[0]}
    # a control room with no notification channel (never paged) is shown her alert too
    desk = Scopes(reg).of(Principal("sec-screen", "security", "Control room", "session"))
    assert fall.id in {a.id for a in d.store.find(audience=desk.audience)[0]}
    assert d.store.admits(desk.audience, fall)
    for c in CARETAKERS:
        assert told(sender, c) == []
    assert "a resident in the fire: told those paged about it → " in "".join(
        h.note for h in fall.history
    )


def test_a_fall_then_smoke_in_her_home_tells_the_guards_once(alerts_at: Path | str) -> None:
    clock, sender, reg = FakeClock(), FakeSender(), named()
    with dispatcher(alerts_at, clock, sender, reg) as d:
        fall = d.store.apply(fire("wearable_fall", "wr-1"))
        assert fall is not None
        settle(d)
        cared = {c: list(sender.to(c)) for c in CARETAKERS}
        assert any(cared.values())  # her caretakers were paged about the fall
        assert not any(guard_sees(d, reg, g, fall.alert) for g in GUARDS)
        clock.advance(60)
        d.store.apply(fire("smoke_alarm", "smk-101", clock()))
        settle(d)
        assert all(sender.to(g) for g in GUARDS)  # the fire paged at once
        check_guards_told(d, sender, reg, fall.alert.id)
        # more of the fire (a second detector: confirmed) is no second update about her
        clock.advance(30)
        d.store.apply(fire("smoke_alarm", "smk-102", clock()))
        settle(d)
        clock.advance(60)
        d.notifier.kick()
        settle(d)
        for g in GUARDS:
            assert len(told(sender, g)) == 1
        for c in CARETAKERS:  # nothing of hers for the caretakers but her own alert's pages
            assert told(sender, c) == []


def test_smoke_then_a_fall_in_that_home_tells_the_guards_once(alerts_at: Path | str) -> None:
    clock, sender, reg = FakeClock(), FakeSender(), named()
    with dispatcher(alerts_at, clock, sender, reg) as d:
        d.store.apply(fire("smoke_alarm", "smk-101"))
        settle(d)
        assert all(sender.to(g) for g in GUARDS)
        clock.advance(60)
        fall = d.store.apply(fire("wearable_fall", "wr-1", clock()))
        assert fall is not None
        settle(d)
        d.notifier.kick()
        # the guards' last page was a minute ago: the update goes at once
        sender.wait(lambda: all(told(sender, g) for g in GUARDS))
        check_guards_told(d, sender, reg, fall.alert.id)
        # the fall again (a rematch), and a smoke alarm next door: still one update each
        clock.advance(30)
        d.store.apply(fire("wearable_fall", "wr-1", clock()))
        d.store.apply(fire("smoke_alarm", "smk-102", clock()))
        settle(d)
        clock.advance(60)
        d.notifier.kick()
        settle(d)
        for g in GUARDS:
            assert len(told(sender, g)) == 1


def test_a_fall_in_another_home_during_the_fire_is_not_the_guards(alerts_at: Path | str) -> None:
    clock, sender, reg = FakeClock(), FakeSender(), named()
    with dispatcher(alerts_at, clock, sender, reg) as d:
        d.store.apply(fire("smoke_alarm", "smk-101"))
        settle(d)
        clock.advance(60)
        other = d.store.apply(fire("wearable_fall", "wr-2", clock()))  # r-2, 1-1-102: no smoke
        assert other is not None
        settle(d)
        clock.advance(60)
        d.notifier.kick()
        settle(d)
        a = d.store.get(other.alert.id)
        assert a.labels.get("correlated") is None and a.incident_id != d.store.get(1).incident_id
        assert sender.to("care-2")  # r-2's caretaker is paged about her fall
        for g in GUARDS:
            assert told(sender, g) == [] and not any("跌倒" in t for _, t, _ in sender.to(g))
            assert not guard_sees(d, reg, g, a)
        desk = Scopes(reg).of(Principal("sec-screen", "security", "Control room", "session"))
        assert a.id not in {x.id for x in d.store.find(audience=desk.audience)[0]}


def test_an_update_while_a_message_waits_is_folded_into_it(alerts_at: Path | str) -> None:
    """A second detector confirms the fire a moment after the first page (the confirmation
    waits out the coalescing window); her fall then is folded into that one message."""
    clock, sender, reg = FakeClock(), FakeSender(), named()
    with dispatcher(alerts_at, clock, sender, reg) as d:
        d.store.apply(fire("smoke_alarm", "smk-101"))
        settle(d)
        clock.advance(5)
        d.store.apply(fire("smoke_alarm", "smk-102", clock()))  # floor 1: fire confirmed
        settle(d)
        clock.advance(1)
        fall = d.store.apply(fire("wearable_fall", "wr-1", clock()))
        assert fall is not None
        settle(d)
        assert all(told(sender, g) == [] for g in GUARDS)  # not yet: one message waits
        clock.advance(15)
        d.notifier.kick()
        sender.wait(lambda: all(told(sender, g) for g in GUARDS))
        settle(d)
        for g in GUARDS:
            first, folded = sender.to(g)  # the alarm, then one message with the rest
            assert "烟雾报警" in first[1]
            assert TOLD in folded[1] + folded[2] and "火警确认" in folded[1] + folded[2]
            assert NAME not in folded[1] + folded[2] and "88" not in folded[1] + folded[2]
            assert guard_sees(d, reg, g, d.store.get(fall.alert.id))
            (row,) = [x for x in d.outbox.of_alert(fall.alert.id) if x.staff_id == g]
            assert (row.status, row.reason) == ("cancelled", FOLDED)  # its text went in the other

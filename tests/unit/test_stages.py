"""Alerting's stages one at a time, without the dispatcher or its thread: each built over an
alert store on a fake clock and called with an item, as ``alerts.dispatch.compose`` puts them
together. Also the settings the stages are handed, read from the same environment variables as
before they were grouped."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from alerts import AlertStore
from alerts.config import GroupConfig
from alerts.db import Writer
from alerts.dispatch import compose
from alerts.escalation import Timer, Timers, load_chains
from alerts.model import Alert
from alerts.notify import SendResult
from alerts.silences import Silences
from alerts.stages import Group, History, Item, Mute, Pipeline, Start
from alerts.system import STAFF_UNREACHABLE
from jiayuan.cli import settings_from_env
from jiayuan.settings import Settings
from tests.alerting import RULES, TZ, FakeClock, FakeSender, dispatcher, fire, notes, settle


@pytest.fixture
def world(
    alerts_at: Path | str,
) -> Iterator[tuple[AlertStore, Writer, FakeClock]]:
    clock = FakeClock()
    store = AlertStore(alerts_at, clock=clock)
    db = Writer(store.path)
    yield store, db, clock
    db.close()
    store.close()


def raised(store: AlertStore, rule_id: str, device_id: str, at: float) -> Alert:
    change = store.apply(fire(rule_id, device_id, at))
    assert change is not None and change.action == "raised"
    return change.alert


def waiting(store: AlertStore, db: Writer, a: Alert, now: float) -> Item:
    """``a`` after its grouping wait, as the dispatch thread hands it to the due stages."""
    timers = Timers(db)
    start = Start(timers, load_chains(), GroupConfig(wait_s=60), History(store), lambda: True)
    assert start(Item(a, now)) is None  # a building's trouble waits; nothing is due now
    timer = timers.get(a.id)
    assert timer is not None and timer.state == "grouping" and timer.due_at == now + 60
    return Item(a, now + 60, timer=timer)


def test_the_group_stage_folds_a_buildings_trouble_into_one_incident(
    world: tuple[AlertStore, Writer, FakeClock],
) -> None:
    store, db, clock = world
    group = Group(db, load_chains(), GroupConfig(threshold=3), store, History(store))
    items = [
        waiting(store, db, raised(store, "smoke_fault", f"smk-B02-{i}", clock()), clock())
        for i in (1, 2, 3)
    ]
    clock.advance(60)
    assert [group(item) for item in items] == [None, None, None]  # none paged on its own
    (incident,) = store.find(rule_id="building_trouble")[0]
    assert incident.device_id == "B02" and incident.route == "operator"
    assert incident.labels["devices"] == "3"
    first = store.get(items[0].alert.id)
    assert any("paged as one incident" in h.note for h in first.history)


def test_a_lone_trouble_goes_on_to_its_chain_from_the_first_step(
    world: tuple[AlertStore, Writer, FakeClock],
) -> None:
    store, db, clock = world
    group = Group(db, load_chains(), GroupConfig(threshold=3), store, History(store))
    item = waiting(store, db, raised(store, "smoke_fault", "smk-B02-1", clock()), clock())
    out = group(item)
    assert out is not None and out.timer is not None
    assert (out.timer.state, out.timer.step, out.timer.due_at) == ("chain", 0, item.now)
    assert store.find(rule_id="building_trouble")[0] == []


def test_the_mute_stage_holds_a_step_while_a_silence_runs_and_says_so_once(
    world: tuple[AlertStore, Writer, FakeClock],
) -> None:
    store, db, clock = world
    silences = Silences(db, RULES)
    mute = Mute(db, silences, History(store), TZ)
    s = silences.create(
        starts_at=clock(),
        ends_at=clock() + 3600,
        reason="replacing batteries",
        author="ops-1",
        now=clock(),
        rule_id="smoke_fault",
        device_id="smk-B02-1",
    )
    a = raised(store, "smoke_fault", "smk-B02-1", clock())
    timers = Timers(db)
    assert timers.start(a.id, "trouble", "chain", clock(), clock())
    for _ in range(2):
        timer = timers.get(a.id)
        assert timer is not None
        assert mute(Item(a, clock(), timer=timer)) is None
    timer = timers.get(a.id)
    assert timer is not None and timer.state == "muted" and timer.due_at == s.ends_at
    muted = [h.note for h in store.get(a.id).history if h.action == "muted"]
    assert muted == [
        f"muted by silence {s.id} until 11-25 11:00 (replacing batteries; by ops-1): "
        "recorded, not sent"
    ]
    clock.advance(3600)
    out = mute(Item(a, clock(), timer=timer))
    assert out is not None and out.timer is not None and out.timer.state == "chain"
    assert f"silence {s.id} is over: paging now" in [h.note for h in store.get(a.id).history]


def test_a_pipeline_runs_its_stages_in_order_until_one_stops_the_item(
    world: tuple[AlertStore, Writer, FakeClock],
) -> None:
    store, _, clock = world
    a = raised(store, "smoke_fault", "smk-B02-1", clock())
    seen: list[str] = []

    def stage(name: str, go_on: bool = True) -> Callable[[Item], Item | None]:
        def run(item: Item) -> Item | None:
            seen.append(name)
            return item if go_on else None

        return run

    assert Pipeline(stage("a"), stage("b"))(Item(a, clock())) == Item(a, clock())
    assert Pipeline(stage("c"), stage("d", go_on=False), stage("e"))(Item(a, clock())) is None
    assert seen == ["a", "b", "c", "d"]


def test_the_pipelines_are_composed_in_the_documented_order(
    world: tuple[AlertStore, Writer, FakeClock],
) -> None:
    from alerts.config import Config
    from alerts.correlation import Correlator
    from alerts.escalation import Timers
    from alerts.incidents import Incidents
    from alerts.outbox import Outbox
    from alerts.routing import Router
    from tests.alerting import community

    store, db, _ = world
    reg = community()
    stages = compose(
        store,
        db,
        Config(),
        chains=load_chains(),
        router=Router(reg, TZ),
        correlator=Correlator(reg, store),
        timers=Timers(db),
        outbox=Outbox(db),
        silences=Silences(db, RULES),
        incidents=Incidents(db),
        submit=lambda ids: None,
    )
    assert repr(stages.on_change["raised"]) == (
        "Place → TellResidents → Correlate → Start → Firing → Group → Mute → Page → TellResidents"
    )
    assert repr(stages.on_change["rematched"]) == (
        "Place → TellResidents → Refresh → FlapNote → Start → Firing → Group → Mute → Page"
        " → TellResidents"
    )
    assert repr(stages.due) == "Group → Mute → Page → TellResidents"
    assert repr(stages.on_change["resolved"]) == "Stop → Refresh → FollowUp → Unconfirm"


def test_system_alerts_are_built_by_one_helper() -> None:
    t = STAFF_UNREACHABLE.transition("care-1", firing=True, at=5.0, labels={"community": "y"})
    assert (t.action, t.rule_id, t.device_id, t.kind, t.signal, t.route, t.severity) == (
        "fire", "staff_unreachable", "care-1", "staff", "trouble", "operator", "major",
    )  # fmt: skip
    assert STAFF_UNREACHABLE.transition("care-1", firing=False, at=6.0).action == "clear"


def test_the_alerting_settings_keep_their_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "JIAYUAN_NOTIFY_WORKERS": "2",
        "JIAYUAN_NOTIFY_MAX_ATTEMPTS": "7",
        "JIAYUAN_NOTIFY_BACKOFF_S": "0.5",
        "JIAYUAN_NOTIFY_BACKOFF_MAX_S": "3",
        "JIAYUAN_FLAP_THRESHOLD": "4",
        "JIAYUAN_FLAP_WINDOW_S": "90",
        "JIAYUAN_GROUP_WAIT_S": "10",
        "JIAYUAN_GROUP_WINDOW_S": "600",
        "JIAYUAN_GROUP_THRESHOLD": "6",
        "JIAYUAN_ESCALATION_FILE": "/etc/jiayuan/chains.yaml",
    }.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert (s.notify.workers, s.notify.max_attempts) == (2, 7)
    assert [s.notify.backoff.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert (s.flap.threshold, s.flap.window_s) == (4, 90.0)
    assert (s.group.wait_s, s.group.window_s, s.group.threshold) == (10.0, 600.0, 6)
    assert s.escalation.file == Path("/etc/jiayuan/chains.yaml")
    monkeypatch.setenv("JIAYUAN_NOTIFY_WORKERS", "0")
    with pytest.raises(ValidationError, match=r"notify\.workers"):
        Settings()


def test_every_stage_runs_on_the_dispatch_thread_also_for_delivery_results(
    alerts_at: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused channel: its result comes back from a notify worker, makes care-1 a trouble
    alert and the next step due now; all of it is written by the dispatch thread."""
    writers: list[str] = []
    note = History.note

    def noting(self: History, *args: Any, **kw: Any) -> None:
        writers.append(threading.current_thread().name)
        note(self, *args, **kw)

    monkeypatch.setattr(History, "note", noting)
    clock = FakeClock()
    refused = SendResult(False, False, "Failed to send JSON POST notification: error=404.")
    sender = FakeSender(results={"fake://care-1": [refused]})
    with dispatcher(alerts_at, clock, sender) as d:
        change = d.store.apply(fire("wearable_sos", "wr-1", clock()))
        assert change is not None
        settle(d)
        sender.wait(lambda: len(sender.sent) >= 1)  # the next step, at once
        settle(d)
        d.poll()  # a tick from this thread: taken on the dispatch thread
        history = notes(d, change.alert.id)
        assert "care-1 cannot be reached: every channel failed" in history
        assert "nobody of step 1 can be reached: next step now" in history
        (trouble,) = d.store.find(rule_id="staff_unreachable")[0]
        assert trouble.device_id == "care-1"
    assert writers and set(writers) == {"dispatch"}


# ------------------------------------------------------------------ the dispatch thread


@pytest.mark.expect_errors('jiayuan_log_errors_total{logger="alerts.dispatch"}')
def test_a_tick_that_fails_leaves_the_thread_paging(
    alerts_at: Path | str,
) -> None:
    """One transient store error while reading the due steps (a lock past the busy timeout)
    must not end the dispatch thread: the next fall is still paged, and health stays true."""
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        real = d.timers.due
        failed: list[float] = []

        def once(now: float, limit: int = 200) -> list[Timer]:
            if not failed:
                failed.append(now)
                raise sqlite3.OperationalError("disk I/O error")
            return real(now, limit)

        d.timers.due = once  # type: ignore[method-assign]
        assert d.poll() == 0
        assert failed and d.alive
        d.store.apply(fire("smoke_alarm", "smk-101"))
        settle(d)
        assert sender.sent, "nobody was paged after a failed tick"
        assert d.errors == 1
        d.errors = 0  # counted, as it should be (the fixture refuses uncounted ones)


def test_a_due_step_is_taken_before_a_backlog_of_changes(
    alerts_at: Path | str,
) -> None:
    """The scheduler's tick (``poll_soon``) is taken before the next queued change, so a burst
    of trouble alerts never holds back a fall's page whose cancel window has just ended."""
    clock, sender = FakeClock(), FakeSender()
    with dispatcher(alerts_at, clock, sender) as d:
        order: list[str] = []
        gate = threading.Event()
        changed, tick = d._changed, d._tick

        def slow_change(change: Any) -> None:
            order.append("change")
            gate.wait(30)
            changed(change)

        def counted_tick(now: float) -> int:
            order.append("tick")
            return tick(now)

        d._changed = slow_change  # type: ignore[method-assign]
        d._tick = counted_tick  # type: ignore[method-assign]
        for i in range(1, 9):
            d.store.apply(fire("smoke_fault", f"smk-B02-{i}"))
        d.poll_soon()
        gate.set()
        settle(d)
        assert order[:3] == ["change", "tick", "change"], order
        assert order.count("change") >= 8  # the trouble alerts, and what they set off


def test_a_stray_variable_read_as_part_of_a_list_setting_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``JIAYUAN_RULES_DIR`` (a guessed name) is read as a part of ``JIAYUAN_RULES``; pydantic
    says only "rules: Input should be a valid list", which names no variable the operator set."""
    monkeypatch.setenv("JIAYUAN_RULES_DIR", "/etc/jiayuan/rules")
    assert settings_from_env() is None
    err = capsys.readouterr().err
    assert "JIAYUAN_RULES_DIR: read as part of JIAYUAN_RULES" in err

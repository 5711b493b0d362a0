"""What one instance knew in memory and another changed: two alert stores on one PostgreSQL as
two instances. The status counts (``/metrics``, the console's ops summary), the device presence
that flags open alerts offline, and who is unreachable (the operators' trouble alerts) are the
database's, so instance B shows and acts on what instance A did, and on what A did before it
died. One instance on SQLite keeps them in memory as before (the stores' own suites)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
from prometheus_client import REGISTRY

from alerts import AlertStore
from alerts.paging import NOBODY, UNREACHABLE, Reach
from alerts.stages import History
from tests.alerting import FakeClock, fire

ON_POSTGRESQL = pytest.mark.parametrize("alerts_at", ["postgresql"], indirect=True)


@contextmanager
def two(url: str, clock: FakeClock) -> Iterator[tuple[AlertStore, AlertStore]]:
    with ExitStack() as stack:
        a = AlertStore(url, clock=clock)
        stack.callback(a.close)
        b = AlertStore(url, clock=clock)
        stack.callback(b.close)
        yield a, b


def until(done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def gauge(status: str) -> float | None:
    return REGISTRY.get_sample_value("jiayuan_alerts", {"status": status})


@ON_POSTGRESQL
def test_b_counts_what_a_raised_and_what_b_acknowledged(alerts_at: str) -> None:
    clock = FakeClock()
    with two(alerts_at, clock) as (a, b):
        assert b.counts_by_status() == {"firing": 0, "acknowledged": 0, "resolved": 0}
        first = a.apply(fire("wearable_fall", "w-1", clock()))
        a.apply(fire("wearable_fall", "w-2", clock()))
        assert first is not None
        # b acknowledges one of a's alerts: b's own change, counted at once
        b.acknowledge(first.alert.id, "guard-1")
        assert b.counts_by_status() == {"firing": 1, "acknowledged": 1, "resolved": 0}
        # ... and a, which changed nothing since, sees it on its next reading
        until(lambda: a.counts_by_status() == {"firing": 1, "acknowledged": 1, "resolved": 0})
        b.resolve(first.alert.id, "guard-1")
        # the gauge /metrics and the ops summary show is the last store's (b's): never -1
        assert (gauge("firing"), gauge("acknowledged"), gauge("resolved")) == (1.0, 0.0, 1.0)


@ON_POSTGRESQL
def test_a_device_back_online_on_b_clears_the_flag_a_set(alerts_at: str) -> None:
    """A held the wearable's partition and flagged its alert offline, then died; B took the
    partition over and the wearable came back: B must clear the flag (its memory said online,
    so it skipped the change and the caretaker saw the alert offline for good)."""
    clock = FakeClock()
    with two(alerts_at, clock) as (a, b):
        raised = a.apply(fire("wearable_heart_rate_high", "w-1", clock()))
        assert raised is not None
        a.apply_batch([], [("w-1", True, clock())])
        assert b.get(raised.alert.id).offline and b.is_offline("w-1")
        clock.advance(60)
        changes = b.apply_batch([], [("w-1", False, clock())])
        assert [c.action for c in changes] == ["online"]
        assert not a.get(raised.alert.id).offline and not a.is_offline("w-1")
        # and the other way: back offline on a, whose last write said online
        clock.advance(60)
        assert [c.action for c in a.set_offline("w-1", True, clock())] == ["offline"]
        clock.advance(60)
        assert [c.action for c in b.set_offline("w-1", False, clock())] == ["online"]
        # an older state than the shared row's is still ignored, on either instance
        assert a.set_offline("w-1", True, clock() - 30) == []
        assert not b.get(raised.alert.id).offline


@ON_POSTGRESQL
def test_b_clears_the_unreachable_and_nobody_reached_that_a_raised(alerts_at: str) -> None:
    """A raised "ca-1 cannot be reached" and "route care reached nobody" (and may have died);
    a message to ca-1 then went out from B: the operators' trouble alerts are resolved (B read
    only its own at start, so they stayed open until some restart)."""
    clock = FakeClock()
    with two(alerts_at, clock) as (a, b):
        reach_a = Reach(a, History(a), "y")
        reach_b = Reach(b, History(b), "y")
        fall = a.apply(fire("wearable_fall", "w-1", clock()))
        assert fall is not None
        reach_a.unreachable_now("ca-1", fall.alert, "every channel failed", clock())
        reach_a.nobody_now(fall.alert, clock())
        opened = {(x.rule_id, x.device_id) for x in b.open_alerts()}
        assert {(UNREACHABLE, "ca-1"), (NOBODY, fall.alert.route)} <= opened
        clock.advance(60)
        reach_b.reachable("ca-1", clock())
        assert reach_b.anybody_unreached
        reach_b.someone_reached(fall.alert, clock())
        opened = {(x.rule_id, x.device_id) for x in a.open_alerts()}
        assert opened == {("wearable_fall", "w-1")}
        reach_a.reachable("ca-1", clock())  # a asks too: nothing left to clear
        assert not reach_a.anybody_unreached

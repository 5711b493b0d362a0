"""Two instances' dispatchers on one PostgreSQL (two alert stores over one database): every
escalation step is taken once and every delivery sent once, a dead instance's claimed work is
taken over after the claim time (its late receipts refused), and the per-person throttle holds
across instances. SQLite (one instance) is covered by the suites that run on both backends."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any

import apprise
import pytest

from alerts import AlertStore
from alerts.claims import with_key
from alerts.config import NotifyConfig
from alerts.dispatch import Config, Dispatcher
from alerts.escalation import Timer, Timers
from alerts.throttle import COALESCE_S
from registry.models import Building, Device, Registry, Resident
from rules.transitions import Transition
from tests.alerting import RULES, FakeClock, FakeSender, community, fire, labels, notes, staff

ON_POSTGRESQL = pytest.mark.parametrize("alerts_at", ["postgresql"], indirect=True)
"""Two instances share the work only on PostgreSQL."""

N = 24
"""Residents, each with a wearable and two caretakers of their own: one fall each."""
ALWAYS = ("daily 00:00-24:00",)


def residents() -> Registry:
    return Registry(
        "y",
        buildings=[
            Building(building="B01", compound="C01"),
            Building(building="B02", compound="C01"),
        ],
        devices=[
            Device(
                device_id=f"w-{i}",
                kind="wearable",
                compound="C01",
                building="B01",
                unit=f"1-1-{i + 101}",
                floor=1,
                resident_id=f"r-{i}",
            )
            for i in range(N)
        ],
        residents=[
            Resident(
                resident_id=f"r-{i}",
                building="B01",
                unit=f"1-1-{i + 101}",
                floor=1,
                caretakers=(f"ca-{i}", f"cb-{i}"),
            )
            for i in range(N)
        ],
        staff=[
            # on duty in another building: each is paged for their own resident only
            *(
                staff(f"c{x}-{i}", "caretaker", ALWAYS, buildings=("B02",))
                for i in range(N)
                for x in "ab"
            ),
            staff("sec-desk", "security"),
        ],
    )


def fall(i: int, at: float) -> Transition:
    """Resident ``r-i``'s fall."""
    return replace(fire("wearable_fall", f"w-{i}", at), labels=labels(f"w-{i}", residents()))


@contextmanager
def two(
    url: str, clock: FakeClock, registry: Registry, **config: Any
) -> Iterator[tuple[Dispatcher, FakeSender, Dispatcher, FakeSender]]:
    """Instances ``a`` and ``b``: a store and a dispatcher each, on one database."""
    with ExitStack() as stack:
        out: list[Any] = []
        for name in ("a", "b"):
            store = AlertStore(url, clock=clock)
            stack.callback(store.close)
            sender = FakeSender()
            config_ = Config(sender=sender, instance=name, **config)
            d = Dispatcher(store, registry, RULES, config_, clock)
            d.start()
            stack.callback(d.stop)
            out += [d, sender]
        yield out[0], out[1], out[2], out[3]
        for d in out[::2]:
            assert d.errors == 0 and d.notifier.errors == 0, "an exception was only logged"


def both_poll(a: Dispatcher, b: Dispatcher, rounds: int = 3) -> None:
    """Both instances poll at the same moment, a few times (the service's scheduler does every
    second on each)."""
    for _ in range(rounds):
        go = threading.Barrier(2)
        threads = [threading.Thread(target=_poll, args=(d, go)) for d in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)


def _poll(d: Dispatcher, go: threading.Barrier) -> None:
    go.wait(10)
    d.poll()


def until(done: Callable[[], bool], step: Callable[[], object], timeout: float = 30.0) -> None:
    """Run ``step`` until ``done`` (a deadline, not a timing)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not met in time"
        step()
        time.sleep(0.05)


def rows(d: Dispatcher, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
    return d.db.query(query, args)


def open_deliveries(d: Dispatcher) -> int:
    q = "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'retrying')"
    return int(rows(d, q)[0][0])


def steps_taken(d: Dispatcher, alert_id: int) -> list[str]:
    return [
        n.split(" →")[0].split(":")[0]
        for n in notes(d, alert_id, "notified", "escalated")
        if n.startswith(("step", "repeat"))
    ]


def falls_hung_in_sending(
    a: Dispatcher, sa: FakeSender, hang: threading.Event, clock: FakeClock
) -> list[int]:
    """Instance ``a`` hangs in every send (dead, or stalled with the message handed over): N
    falls raised on it, each past its first step, and its 4 workers each holding a message
    they never finish. Returns the falls' alert ids."""
    sa.block = {f"fake://ca-{i}": hang for i in range(N)}
    alert_ids = []
    for i in range(N):
        change = a.store.apply(fall(i, clock()))
        assert change is not None
        alert_ids.append(change.alert.id)
    until(lambda: all(steps_taken(a, i) == ["step 1/4"] for i in alert_ids), lambda: None)
    sa.wait(lambda: len(sa.calls) == 4)
    return alert_ids


def sent_once(d: Dispatcher, *senders: FakeSender) -> dict[str, int]:
    """Every delivery row is sent, with one attempt, and its key reached the senders; returns
    how many times each key went out (more than once: the documented window only)."""
    keys = Counter(k for s in senders for k in s.keys)
    ids = {str(r[0]) for r in rows(d, "SELECT id FROM deliveries WHERE status = 'sent'")}
    assert ids and set(keys) == ids
    attempts = rows(d, "SELECT delivery_id, count(*) FROM delivery_attempts GROUP BY delivery_id")
    assert {str(r[0]): r[1] for r in attempts} == dict.fromkeys(ids, 1)
    return dict(keys)


@ON_POSTGRESQL
def test_two_instances_take_every_step_once_and_send_every_message_once(
    alerts_at: str,
) -> None:
    clock = FakeClock()
    with two(alerts_at, clock, residents()) as (a, sa, b, sb):
        # the falls raised on instance a while b polls as fast as it can: each first step is
        # taken by whichever claims the new timer first
        stop = threading.Event()

        def keep_polling() -> None:
            while not stop.is_set():
                b.poll()

        poller = threading.Thread(target=keep_polling)
        poller.start()
        try:
            changes = [a.store.apply(fall(i, clock())) for i in range(N)]
            alert_ids = [c.alert.id for c in changes if c is not None]
            assert len(alert_ids) == N
            until(lambda: all(steps_taken(a, i) == ["step 1/4"] for i in alert_ids), lambda: None)
        finally:
            stop.set()
            poller.join(30)
        until(
            lambda: open_deliveries(a) == 0 and a.wait_idle(0.1) and b.wait_idle(0.1),
            lambda: both_poll(a, b, 1),
        )
        # steps 2, 3 and 4 (3, 6 and 9 min) of every fall due at once on both instances
        for _ in range(3):
            clock.advance(180)
            both_poll(a, b)
            until(
                lambda: open_deliveries(a) == 0 and a.wait_idle(0.1) and b.wait_idle(0.1),
                lambda: both_poll(a, b, 1),
            )
        for alert_id in alert_ids:
            assert steps_taken(a, alert_id) == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
        keys = sent_once(a, sa, sb)
        assert set(keys.values()) == {1}  # nobody paged twice
        # step 1: the first caretaker; 2: both; 3: nobody new, so 4 at once: both and the desk
        assert len(keys) == N * (1 + 2 + 3)
        print(f"\nsent by a: {len(sa.keys)}, by b: {len(sb.keys)}")


@ON_POSTGRESQL
def test_a_dead_instances_claims_are_taken_over_after_the_claim_time(alerts_at: str) -> None:
    clock, hang = FakeClock(), threading.Event()
    claim_s = 3.0
    try:
        with two(
            alerts_at, clock, residents(), claim_s=claim_s, notify=NotifyConfig(workers=4)
        ) as (a, sa, b, sb):
            # instance a hangs in every send (dead, or stalled past the claim time, with the
            # message handed over): its 4 workers claim 4 messages and never finish them
            alert_ids = falls_hung_in_sending(a, sa, hang, clock)
            # step 2 comes due; a claims every step and dies before taking them
            clock.advance(180)
            held = a.timers.due(clock())
            assert len(held) == N
            assert b.poll() == 0  # claimed: b leaves them alone while the claims last
            t0 = time.monotonic()
            until(
                lambda: (
                    open_deliveries(b) == 0
                    and all(steps_taken(b, i)[-1:] == ["step 2/4"] for i in alert_ids)
                ),
                lambda: b.poll(),
            )
            waited = time.monotonic() - t0
            assert b.wait_idle(10)
            # a wakes up: its four sends go out (the window: sent, receipt not committed);
            # its receipts are refused, and so is its step
            hang.set()
            until(lambda: a.notifier.refused == 4, lambda: None)
            assert a.wait_idle(10)
            with a.db.tx() as db:
                assert not any(Timers.move(db, t, clock(), step=9, due_at=0.0) for t in held)
            for alert_id in alert_ids:
                assert steps_taken(b, alert_id) == ["step 1/4", "step 2/4"]
            keys = sent_once(b, sa, sb)  # one attempt recorded per delivery: b's
            twice = sorted(k for k, n in keys.items() if n > 1)
            assert len(twice) == 4 and set(twice) == set(sa.keys)  # a's four, same keys
            # step 1 reached every first caretaker, step 2 every second one (the first is
            # reminded or not, depending on when the takeover sent step 1)
            urls = [url for url, _, _ in sb.sent]
            assert {f"fake://ca-{i}" for i in range(N)} <= set(urls)
            assert sorted(u for u in urls if "/cb-" in u) == sorted(
                f"fake://cb-{i}" for i in range(N)
            )
            print(
                f"\nthe dead instance's claimed steps taken over {waited:.1f} s after"
                f" (claim {claim_s} s)"
            )
    finally:
        hang.set()


@ON_POSTGRESQL
def test_the_throttle_holds_across_instances(alerts_at: str) -> None:
    """Smoke alarms on eight floors of one building, raised on both instances at once: one
    incident; each person gets the first message at once and the rest folded, never two
    messages within ``COALESCE_S`` (two instances deciding at once would both send)."""
    clock = FakeClock()
    with two(alerts_at, clock, community()) as (a, _, b, _):
        go = threading.Barrier(2)

        def raise_(d: Dispatcher, floors: range) -> None:
            go.wait(10)
            for i in floors:
                d.store.apply(fire("smoke_alarm", f"smk-B02-{i}", clock()))

        threads = [
            threading.Thread(target=raise_, args=(a, range(1, 9, 2))),
            threading.Thread(target=raise_, args=(b, range(2, 9, 2))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for _ in range(3):
            both_poll(a, b, 1)
            assert a.wait_idle(10) and b.wait_idle(10)
            clock.advance(COALESCE_S)
        times = rows(
            a,
            "SELECT d.staff_id, d.channel, a.incident_id, d.next_at FROM deliveries d"
            " JOIN alerts a ON a.id = d.alert_id WHERE d.status != 'cancelled'"
            " ORDER BY d.next_at",
        )
        assert len({r[2] for r in times}) == 1  # one fire
        by: dict[tuple[str, str], list[float]] = {}
        for r in times:
            by.setdefault((r[0], r[1]), []).append(r[3])
        assert by
        for person, at in by.items():
            gaps = [y - x for x, y in itertools.pairwise(at)]
            assert all(g >= COALESCE_S - 1e-6 for g in gaps), (person, at)


def test_the_idempotency_key_rides_in_a_header_where_the_channel_has_one() -> None:
    hook = with_key("json://127.0.0.1:8025/notify/ca-1", "42")
    assert hook == "json://127.0.0.1:8025/notify/ca-1?%2BIdempotency-Key=42"
    assert with_key("xmls://h/p?method=PUT", "7") == "xmls://h/p?method=PUT&%2BIdempotency-Key=7"
    assert "%2BX-Idempotency-Key=7" in with_key("mailto://u:p@example.com", "7")
    assert with_key("wecombot://botkey", "7") == "wecombot://botkey"  # nowhere to put it
    plugin = apprise.Apprise.instantiate(hook)
    assert plugin is not None and getattr(plugin, "headers", None) == {"Idempotency-Key": "42"}


@ON_POSTGRESQL
def test_a_late_step_by_a_holder_whose_claim_was_taken_is_refused(alerts_at: str) -> None:
    clock = FakeClock()
    with two(alerts_at, clock, residents(), claim_s=3.0) as (a, _, b, _):
        change = a.store.apply(fall(0, clock()))
        assert change is not None
        until(lambda: steps_taken(a, change.alert.id) == ["step 1/4"], lambda: None)
        clock.advance(180)
        (mine,) = a.timers.due(clock())
        assert b.timers.due(clock()) == []  # a holds it
        theirs: list[Timer] = []
        until(lambda: bool(theirs), lambda: theirs.extend(b.timers.due(clock())))
        with a.db.tx() as db:  # a comes back after its claim expired and b claimed the step
            assert not Timers.move(db, mine, clock(), step=2, due_at=clock() + 180)
        with b.db.tx() as db:
            assert Timers.move(db, theirs[0], clock(), step=2, due_at=clock() + 180)

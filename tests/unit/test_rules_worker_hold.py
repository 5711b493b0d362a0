"""The rules worker holding the commit of batches without effects (``step(hold=True)``, what its
thread does) against committing every batch: two workers over the same journal, in lockstep,
with ticks now and then. They hand the alert store the same transitions and presence changes in
the same order, and whenever the holding one has nothing held, both have saved the same rule
state, flapping state and cursor. A crash while batches are held (the worker dropped, a new one
started on the same files) ends with the same alerts and the same saved state as no crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts import AlertStore
from alerts.noise import FlapGate
from rules.engine import RuleEngine
from rules.model import Rule, builtin_pack, load_rules
from rules.worker import RulesWorker
from tests.alerting import TZ
from tests.clock import FakeClock
from tests.unit.test_backtest_fast import T0, Items, load, registry, rule_files, steps
from tests.unit.test_rules_worker_fast import Recording, saved, write_journal


def _worker(
    tmp: Path, name: str, rules: list[Rule], clock: FakeClock, batch: int, **kw: Any
) -> tuple[RulesWorker, Recording]:
    store = Recording(AlertStore(tmp / f"alerts-{name}.db", clock=clock))
    worker = RulesWorker(
        tmp / "journal.db",
        store,
        lambda: RuleEngine(rules, registry(), clock, max_unregistered=1, tz=TZ),
        community="y",
        gate=FlapGate(threshold=2, window_s=120, clock=clock),
        batch_rows=batch,
        clock=clock,
        **kw,
    )
    return worker, store


def _effects(store: Recording) -> list[Any]:
    return [b for b in store.batches if b[0] or b[1]]


def run_both(
    tmp: Path, rules: list[Rule], items: Items, batch: int, hold_rows: int, tick_every: int
) -> None:
    n = write_journal(tmp / "journal.db", items)
    clock = FakeClock(T0)
    each, every = _worker(tmp, "each", rules, clock, batch, hold_s=0.0)
    held, holding = _worker(tmp, "held", rules, clock, batch, hold_s=1e9, hold_rows=hold_rows)
    for k in range(n // batch + 2):
        assert each.step() == held.step(hold=True)
        assert _effects(holding) == _effects(every), k
        if held._held is None:
            assert saved(holding.store) == saved(every.store), k
        if k % tick_every == tick_every - 1:
            clock.advance(20.0)
            each.tick()
            held.tick()  # commits what is held, with the tick's effects
            assert _effects(holding) == _effects(every), k
            assert saved(holding.store) == saved(every.store), k
    held.flush()
    assert saved(holding.store) == saved(every.store)
    assert held.position == each.position == n
    assert held.evaluated == each.evaluated == n
    assert len(holding.batches) <= len(every.batches)
    for w in (each, held):
        w.stop()


def crash_while_held(tmp: Path, rules: list[Rule], items: Items, batch: int, at: int) -> None:
    n = write_journal(tmp / "journal.db", items)
    clock = FakeClock(T0)
    each, every = _worker(tmp, "each", rules, clock, batch, hold_s=0.0)
    each.run_until_idle()
    held, _ = _worker(tmp, "held", rules, clock, batch, hold_s=1e9, hold_rows=10**9)
    for _ in range(at):
        held.step(hold=True)
    held.stop()  # the process is killed: what is held is lost (stop() commits nothing here)
    again, store = _worker(tmp, "held", rules, clock, batch, hold_s=0.0)
    assert again.position == held.position  # the committed cursor, before what was held
    again.run_until_idle()
    assert again.position == n
    assert saved(store.store) == saved(every.store)
    assert [
        (a.rule_id, a.device_id, a.status, a.match_count)
        for a in store.store.find(limit=500, sort="oldest")[0]
    ] == [
        (a.rule_id, a.device_id, a.status, a.match_count)
        for a in every.store.find(limit=500, sort="oldest")[0]
    ]
    for w in (each, again):
        w.stop()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule_files(),
    st.lists(steps(), min_size=20, max_size=150),
    st.integers(1, 30),
    st.integers(1, 200),
    st.integers(1, 6),
)
def test_holding_commits_hands_the_store_what_committing_every_batch_does(
    tmp_path_factory: Any, rule_dicts: list[dict[str, Any]], items: Items, batch: int,
    hold_rows: int, tick_every: int,
) -> None:  # fmt: skip
    run_both(tmp_path_factory.mktemp("h"), load(rule_dicts), items, batch, hold_rows, tick_every)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps(), min_size=20, max_size=150), st.integers(1, 30), st.integers(1, 6))
def test_holding_commits_with_the_pack(
    tmp_path_factory: Any, items: Items, batch: int, tick_every: int
) -> None:
    rules = load_rules([builtin_pack()])
    run_both(tmp_path_factory.mktemp("h"), rules, items, batch, 10**9, tick_every)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule_files(),
    st.lists(steps(), min_size=20, max_size=150),
    st.integers(1, 30),
    st.integers(0, 8),
)
def test_a_crash_while_batches_are_held_ends_as_no_crash(
    tmp_path_factory: Any, rule_dicts: list[dict[str, Any]], items: Items, batch: int, at: int
) -> None:
    crash_while_held(tmp_path_factory.mktemp("c"), load(rule_dicts), items, batch, at)

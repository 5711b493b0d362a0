""":class:`rules.replay.FastRows` keeps what it looked up for devices not in the registry too
(their readings evaluated as the engine would is tests/unit/test_backtest_fast.py's and
test_rules_worker_fast.py's, whose journals hold strangers and an engine that keeps one), but
made-up device ids do not grow it past what the engine itself keeps."""

from __future__ import annotations

import json

from registry.models import Registry
from rules.engine import RuleEngine
from rules.model import builtin_pack, load_rules
from rules.replay import FastRows
from tests.unit.test_backtest_fast import T0


def test_made_up_device_ids_do_not_grow_what_fast_rows_keep() -> None:
    engine = RuleEngine(load_rules([builtin_pack()]), Registry("y"), max_unregistered=5)
    fast = FastRows(engine, "y")
    body = json.dumps({"heart_rate": 70, "spo2": 97, "steps": 5, "battery": 80, "worn": True})
    for i in range(20_000):
        row = (i + 1, f"x-{i}", "wearable", "telemetry", T0 + i, T0 + i, i, None, None, body)
        assert fast.evaluate(row) == []
    assert len(engine._devs) == 5
    assert len(fast._known) <= fast._limit()
    again = (20_001, "x-19999", "wearable", "telemetry", T0 + 1e5, T0 + 1e5, 1, None, None, body)
    assert fast.evaluate(again) == []
    assert fast._known["x-19999"][4] is not None  # a stranger heard again is at rest

"""The backtest against what really happened: the rules worker and the alert store run a stream
on a fake clock (ticking every second, a person resolving an alert on the way), then the
backtest replays the same journal; for the rules in force its per-rule, per-day counts are the
alerts the store raised, and a changed rule shows its difference."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts import AlertStore
from alerts.noise import FlapGate
from ingest.journal import Journal
from ingest.payloads import Reading, decode
from ingest.topics import topic_for
from registry.models import Building, Device, Registry, Resident
from rules.backtest import Report, backtest, raised_in_store
from rules.engine import RuleEngine
from rules.model import builtin_pack, load_rules
from rules.worker import RulesWorker
from tests.alerting import TZ, FakeClock

T0 = 1_764_547_200.0  # 2025-12-01 08:00 in Lanzhou
RULES = load_rules([builtin_pack()])
HOURS = 4


def registry() -> Registry:
    devices = [
        Device(device_id=f"w{i}", kind="wearable", compound="c1", building="b1",
               unit=f"1-1-{100 + i}", resident_id=f"r{i}")
        for i in range(4)
    ] + [
        Device(device_id=f"s{i}", kind="smoke", compound="c1", building="b1", unit=f"1-1-{100 + i}")
        for i in range(3)
    ] + [Device(device_id="g1", kind="gate", compound="c1", building="b1")]  # fmt: skip
    residents = [
        Resident(resident_id=f"r{i}", building="b1", unit=f"1-1-{100 + i}") for i in range(4)
    ]
    return Registry(
        "y",
        buildings=[Building(building="b1", compound="c1")],
        devices=devices,
        residents=residents,
    )


def stream() -> list[tuple[float, str, str, str, float, dict[str, Any]]]:
    """(received, kind, device, stream, ts, body): four hours of a small building."""
    rng = random.Random(7)
    out: list[tuple[float, str, str, str, float, dict[str, Any]]] = []
    for m in range(HOURS * 60):
        for i in range(4):
            if i == 3 and 60 <= m < 130:
                continue  # w3 silent for 70 minutes: wearable_silent
            ts = T0 + m * 60 + i * 7
            hr = 128 if i == 1 and (30 <= m < 50 or 150 <= m < 175) else 70 + rng.randint(-5, 5)
            body = {"heart_rate": hr, "steps": 1000 + (m if i != 1 else 0), "battery": 80}
            lag = 900 if i == 2 and 200 <= m < 210 else 1  # a burst of late readings
            out.append((ts + lag, "wearable", f"w{i}", "telemetry", ts, body))
        if m % 30 == 0:
            for i in range(3):
                out.append((T0 + m * 60 + 20 + i, "smoke", f"s{i}", "telemetry",
                            T0 + m * 60 + 20 + i, {"co_ppm": 2, "battery": 90}))  # fmt: skip
    for m in (20, 95, 170, 171, 200):  # falls, one cancelled within its window
        out.append((T0 + m * 60 + 31, "wearable", "w0", "event", T0 + m * 60 + 30,
                    {"event": "fall"}))  # fmt: skip
    for m in (95, 171):  # the second cancels a fall on an alert paged before: it stays open
        out.append((T0 + m * 60 + 45, "wearable", "w0", "event", T0 + m * 60 + 44,
                    {"event": "fall_cancelled"}))  # fmt: skip
    for k in range(7):  # a detector that flaps: alarm / clear seven times in ten minutes
        t = T0 + 80 * 60 + k * 80
        out.append((t + 1, "smoke", "s1", "event", t, {"event": "alarm"}))
        out.append((t + 31, "smoke", "s1", "event", t + 30, {"event": "alarm_clear"}))
    for k in range(12):  # denied cards: twice five within two minutes
        t = T0 + (40 if k < 6 else 140) * 60 + (k % 6) * 15
        out.append((t + 1, "gate", "g1", "event", t, {"event": "denied"}))
    out.sort(key=lambda x: x[0])
    return out


def run_live(tmp: Path) -> tuple[float, float]:
    """The stream through the real worker and store, ticking each second; returns (start,
    end) of the run. A person resolves the first fall on the way."""
    clock = FakeClock(T0)
    journal = Journal(tmp / "journal.db")
    store = AlertStore(tmp / "alerts.db", clock=clock)
    worker = RulesWorker(
        tmp / "journal.db",
        store,
        lambda: RuleEngine(RULES, registry(), clock=clock, tz=TZ),
        community="y",
        gate=FlapGate(threshold=3, window_s=600, clock=clock),
        clock=clock,
    )
    next_tick, seq = T0 + 1, 0
    resolve_at = T0 + 60 * 60
    end = T0 + HOURS * 3600 + 1800
    items = stream()
    i = 0
    while next_tick < end:
        while i < len(items) and items[i][0] < next_tick:
            received, kind, device, stream_, ts, body = items[i]
            clock.t = received
            seq += 1
            payload = json.dumps({"ts": round(ts * 1000), "seq": seq, **body}).encode()
            r = decode(topic_for("y", kind, device, stream_), payload, received)
            assert isinstance(r, Reading), r
            journal.write_batch([r], [])
            worker.run_until_idle()
            i += 1
        clock.t = next_tick
        worker.tick()
        if next_tick == resolve_at:
            (fall,) = store.find(rule_id="wearable_fall", open_only=True)[0]
            store.resolve(fall.id, "care-1", "checked on her")
        next_tick += 1
    store.close()
    journal.close()
    return T0, end


def test_the_backtest_counts_what_the_store_raised_and_shows_a_change(tmp_path: Path) -> None:
    start, end = run_live(tmp_path)
    since = start + 1800  # the first half hour is the warm-up
    truth = raised_in_store(tmp_path / "alerts.db", {r.id for r in RULES}, since, end, TZ)
    raised = {k: sum(v.values()) for k, v in truth.items() if v}
    # the stream exercises the rules it means to, and the store's own counting
    assert raised["wearable_fall"] == 2  # resolved by a person in between; one cancelled
    assert raised["wearable_heart_rate_high"] == 2
    assert raised["smoke_alarm"] == 4  # then flapping: held open, the rest are rematches
    assert raised["gate_denied_repeated"] == 2
    assert raised["wearable_silent"] == 5  # w3 for a while; all four in the quiet at the end
    # a changed rule: a level everyone's heart passes now and then, for a minute
    tried = tmp_path / "tried.yaml"
    changed = [
        r.model_dump(by_alias=True, exclude_defaults=True) for r in RULES if r.id.startswith("wear")
    ]
    for r in changed:
        if r["id"] == "wearable_heart_rate_high":
            r["above"], r["clear"], r["for"] = 74, 70, 60.0
    tried.write_text(yaml.safe_dump({"rules": changed}, sort_keys=False), encoding="utf-8")

    def tried_out(jobs: int = 1) -> Report:
        return backtest(
            tmp_path / "journal.db",
            load_rules([tried]),
            RULES,
            registry(),
            since=since,
            until=end,
            tz=TZ,
            alerts=tmp_path / "alerts.db",
            warmup_s=1800,
            gate=lambda clock: FlapGate(threshold=3, window_s=600, clock=clock),
            jobs=jobs,
        )

    report = tried_out()
    assert report.actual is not None
    for rule_id, days in report.in_force.items():
        assert days == report.actual[rule_id], rule_id  # per rule and per day
    assert report.new["wearable_fall"] == report.in_force["wearable_fall"]
    assert sum(report.new["wearable_heart_rate_high"].values()) > raised["wearable_heart_rate_high"]
    assert "smoke_alarm" not in report.new  # not in the file tried
    text = report.text()
    assert "wearable_heart_rate_high" in text and "smoke_alarm" in text
    split = tried_out(jobs=3)
    assert (split.new, split.in_force, split.rows) == (report.new, report.in_force, report.rows)


def test_the_backtest_refuses_an_empty_range(tmp_path: Path) -> None:
    Journal(tmp_path / "journal.db").close()
    with pytest.raises(ValueError, match="until must be after since"):
        backtest(tmp_path / "journal.db", RULES, RULES, registry(), since=T0, until=T0, tz=TZ)


def test_the_command_prints_per_rule_and_per_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from jiayuan.cli import main
    from registry.loader import write_registry

    run_live(tmp_path)
    write_registry(registry(), tmp_path / "registry")
    monkeypatch.setenv("JIAYUAN_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("JIAYUAN_TIMEZONE", "Asia/Shanghai")
    code = main(
        ["rules", "backtest", str(builtin_pack()), "--data-dir", str(tmp_path),
         "--since", "2025-12-01T08:30", "--until", "2025-12-01T13:00", "--warmup", "30m",
         "--jobs", "1"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("wearable_fall "))
    assert line.split()[1:] == ["2", "2", "+0", "2"]  # tried, in force, diff, raised
    assert "wearable_fall: 2025-12-01 2/2" in out
    assert main(["rules", "backtest", str(builtin_pack()), "--data-dir", str(tmp_path),
                 "--since", "tomorrow", "--until", "2025-12-02"]) == 2  # fmt: skip

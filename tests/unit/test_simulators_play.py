"""The day player on a fake clock, the token bucket, the progress line, the command line."""

from __future__ import annotations

import argparse
import io
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from ingest.payloads import DeadLetter, Reading, decode
from registry import load_registry
from simulators.behaviour import TZ
from simulators.cli import add_arguments, run
from simulators.fleet import build_fleet
from simulators.player import DayPlayer, Incidents, natural_speed, play_scenarios
from simulators.progress import Progress
from simulators.publisher import Stats, TokenBucket
from tests.clock import FakeClock

START = datetime(2026, 3, 2, 6, 30, tzinfo=TZ).timestamp()


class Ticking(threading.Event):
    """A stop event whose waiting moves the fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.t += timeout or 0.0
        return self.is_set()


@dataclass
class Sink:
    clock: FakeClock
    sent: list[tuple[float, str, bytes, bool]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        assert qos == 1
        self.sent.append((self.clock(), topic, payload, retain))


def test_a_day_with_incidents_on_a_fake_clock() -> None:
    fleet = build_fleet(seed=5, devices=300)
    clock = FakeClock(START)
    sink = Sink(clock)
    player = DayPlayer(
        fleet,
        sink,
        speed=6.0,
        sim_start=START,
        incidents=Incidents(every=120.0, first=5.0),
        stop=Ticking(clock),
        clock=clock,
    )
    player.run(duration=1500.0)
    assert START + 1500 <= clock.t < START + 1501

    statuses = [decode(t, p, START) for _, t, p, retain in sink.sent[:300]]
    assert all(isinstance(r, Reading) and r.event == "online" for r in statuses)
    assert all(retain for *_, retain in sink.sent[:300])

    seqs: dict[str, list[int]] = defaultdict(list)
    kinds: Counter[tuple[str, str]] = Counter()
    dead = 0
    for at, topic, payload, _ in sink.sent:
        r = decode(topic, payload, at + 0.1)
        if isinstance(r, DeadLetter):
            dead += 1
            continue
        assert r.ts_flag is None and r.seq is not None
        seqs[r.device_id].append(r.seq)
        kinds[(r.kind, r.stream)] += 1
    assert all(s == sorted(s) and len(set(s)) == len(s) for s in seqs.values())
    wearables = len(fleet.wearables)
    assert kinds[("wearable", "telemetry")] >= wearables * 1500 * 6 / 60 * 0.95
    assert kinds[("gate", "event")] > 0 and kinds[("smoke", "telemetry")] > 0

    started = player.started
    assert len(started) >= 5
    assert dead == sum(len(sc.steps) for _, sc in started if sc.name == "bad_input")
    # While an incident plays (and for its lead-in and quiet time), its devices send only
    # what the scenario says.
    for at, sc in started:
        own = {s.payload for s in sc.steps}
        until = at + sc.lead_in + max(sc.duration, sc.quiet_for)
        for d in sc.devices:
            during = [p for t_, t, p, _ in sink.sent if t.split("/")[3] == d and at <= t_ <= until]
            assert all(p in own for p in during), sc.name
            assert during or at + sc.lead_in > clock.t, sc.name


def test_rate_sets_the_speed() -> None:
    fleet = build_fleet(devices=500)
    assert natural_speed(fleet, fleet.natural_rate() * 40) == pytest.approx(40)


def test_play_scenarios_without_waiting() -> None:
    fleet = build_fleet(devices=500)
    clock = FakeClock(START)
    sink = Sink(clock)
    done = play_scenarios(fleet, sink, ["sos", "denied_burst"], realtime=False, clock=clock)
    assert len(sink.sent) == sum(len(sc.steps) for sc in done)
    assert {sc.name for sc in done} == {"sos", "denied_burst"}


def test_token_bucket_paces_to_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(100.0, burst=10, clock=lambda: now[0], sleep=sleep)
    for _ in range(1010):
        bucket.take()
    assert now[0] == pytest.approx(10.0, rel=0.01)  # 10 burst + 1,000 at 100/s
    assert TokenBucket(None).take() == 0.0
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_progress_updates_one_line_on_a_terminal_and_prints_lines_otherwise() -> None:
    stats = Stats(started=0.0, sent=1500, acked=1200)
    tty, plain = io.StringIO(), io.StringIO()
    Progress(stats, tty, tty=True).show()
    Progress(stats, plain, tty=False).show()
    assert tty.getvalue().startswith("\r") and "\n" not in tty.getvalue()
    assert "sent 1,500" in tty.getvalue() and "acked 1,200" in tty.getvalue()
    assert plain.getvalue().startswith("progress: ") and plain.getvalue().endswith("\n")


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


def test_options_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIAYUAN_MQTT_HOST", "10.0.0.5")
    monkeypatch.setenv("JIAYUAN_MQTT_PORT", "1884")
    a = parse("--scenario", "fire", "--scenario", "fall", "--incidents", "off")
    assert (a.host, a.port, a.community) == ("10.0.0.5", 1884, "y")
    assert a.scenario == ["fire", "fall"] and a.incidents == []
    assert parse("--incidents", "sos,fall").incidents == ["sos", "fall"]
    assert parse("--day-start", "07:30").day_start == 7 * 3600 + 30 * 60
    for bad in (["--rate", "0"], ["--incidents", "nope"], ["--scenario", "nope"]):
        with pytest.raises(SystemExit):
            parse(*bad)


def test_list_scenarios_and_write_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(parse("--list-scenarios")) == 0
    assert "late_burst" in capsys.readouterr().out
    assert run(parse("--devices", "120", "--write-registry", str(tmp_path))) == 0
    assert "wrote 120 devices" in capsys.readouterr().out
    assert len(load_registry(tmp_path).devices) == 120

"""Playing a fleet: the normal day with incidents sprinkled in, or scenario timelines alone.

The day mode keeps one schedule of every device's next message (wearables every 60 s,
smoke detectors and gate heartbeats every 5 min, gate passages as the traffic comes) in
simulated time, which runs ``speed`` times faster than the wall clock; messages carry the wall
time as ``ts``. Incidents (scenarios) are started at random, play in real time, and hold back
the background readings of the devices they speak for.

A fast day is compressed in wall time for the service too: far above ``--speed 10``, gate
traffic is dense enough for count rules (five denied within two minutes) to fire on normal
traffic now and then. Use ``--speed`` for load and for watching the daily rhythm, speed 1 for
a demo whose alerts all mean something.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from simulators.behaviour import Clock, GateSim, hour_of
from simulators.fleet import Fleet
from simulators.publisher import Sink
from simulators.scenarios import SCENARIOS, Scenario, Step, build_scenario, merge

log = logging.getLogger(__name__)

_TICK, _PASSAGE = 0, 1
_NEVER = float("inf")


@dataclass
class Incidents:
    """Which scenarios the day mode starts, and how often (mean seconds of wall time)."""

    names: Sequence[str] = tuple(n for n in SCENARIOS)
    every: float = 300.0
    first: float | None = None
    """Seconds until the first one; default the smaller of a minute and ``every``."""


@dataclass
class _Mute:
    start: float
    until: float


@dataclass
class DayPlayer:
    """Plays the fleet's normal day through ``publisher`` until stopped or a duration ends."""

    fleet: Fleet
    publisher: Sink
    speed: float = 1.0
    sim_start: float | None = None
    """Simulated time at the start (epoch seconds); default now."""
    incidents: Incidents | None = field(default_factory=Incidents)
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.time
    started: list[tuple[float, Scenario]] = field(default_factory=list)
    """Incidents so far: when each was started (wall time) and what it plays."""

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.fleet.seed}:day")
        self._queue: list[tuple[float, int, int, str]] = []
        self._steps: list[tuple[float, int, Step]] = []
        self._mutes: dict[str, _Mute] = {}
        self._n = 0
        self.time = Clock(0.0, 0.0, self.speed)

    def _push(self, due: float, action: int, device_id: str) -> None:
        self._n += 1
        heapq.heappush(self._queue, (due, self._n, action, device_id))

    def run(self, duration: float | None = None) -> None:
        """Announce every device, then play until ``duration`` seconds passed or ``stop``."""
        now = self.clock()
        self.time = Clock(now, self.sim_start if self.sim_start is not None else now, self.speed)
        end = None if duration is None else now + duration
        for sim in self.fleet.sims.values():
            if self.stop.is_set():
                return
            self.publisher.publish(*sim.status(self.clock()), retain=True)
        now = self.clock()
        for sim in self.fleet.sims.values():
            self._push(now + sim.rng.uniform(0, sim.INTERVAL) / self.speed, _TICK, sim.device_id)
            if isinstance(sim, GateSim):
                passage = self.time.wall(sim.next_passage(self.time.sim(now)))
                self._push(passage, _PASSAGE, sim.device_id)
        inc = self.incidents
        next_incident = _NEVER
        if inc is not None and inc.names:
            next_incident = now + (inc.first if inc.first is not None else min(60.0, inc.every))
        while not self.stop.is_set():
            now = self.clock()
            if end is not None and now >= end:
                break
            if inc is not None and now >= next_incident:
                self._start_incident(now, inc)
                next_incident = now + self.rng.uniform(0.5, 1.5) * inc.every
            due = min(
                self._queue[0][0] if self._queue else _NEVER,
                self._steps[0][0] if self._steps else _NEVER,
                next_incident,
                _NEVER if end is None else end,
            )
            if due > now:
                self.stop.wait(min(due - now, 0.5))
            elif self._steps and self._steps[0][0] <= now:
                _, _, step = heapq.heappop(self._steps)
                self.publisher.publish(step.topic, step.payload, step.qos, step.retain)
            elif self._queue and self._queue[0][0] <= now:
                self._play(*heapq.heappop(self._queue))

    def _play(self, due: float, _: int, action: int, device_id: str) -> None:
        sim = self.fleet.sims[device_id]
        mute = self._mutes.get(device_id)
        silent = mute is not None and mute.start <= due < mute.until
        if mute is not None and due >= mute.until:
            del self._mutes[device_id]
        if action == _TICK:
            if not silent:
                for topic, payload in sim.telemetry(self.time.sim(due), self.clock()):
                    self.publisher.publish(topic, payload)
            jitter = sim.rng.uniform(0.98, 1.02)
            self._push(due + sim.INTERVAL * jitter / self.speed, _TICK, device_id)
        elif isinstance(sim, GateSim):
            if not silent:
                self.publisher.publish(*sim.passage(self.time.sim(due), self.clock()))
            self._push(self.time.wall(sim.next_passage(self.time.sim(due))), _PASSAGE, device_id)

    def _start_incident(self, now: float, inc: Incidents) -> None:
        night = hour_of(self.time.sim(now)) < 5
        names = [n for n in inc.names if night or not SCENARIOS[n].night_only]
        if not names:
            return
        name = self.rng.choices(names, [SCENARIOS[n].weight for n in names])[0]
        lead = SCENARIOS[name].lead_in
        busy = {d for d, m in self._mutes.items() if m.until > now}
        try:
            sc = build_scenario(name, self.fleet, now + lead, self.rng, busy)
        except LookupError:
            log.info("incident %s skipped: no free device", name)
            return
        until = now + lead + max(sc.duration, sc.quiet_for) + 1
        for d in sc.devices:
            self._mutes[d] = _Mute(now, until)
        for step in sc.steps:
            self._n += 1
            heapq.heappush(self._steps, (now + lead + step.offset, self._n, step))
        self.started.append((now, sc))
        when = f"in {lead / 60:.0f} min" if lead else "now"
        log.info("incident %s starts %s: %s", name, when, sc.summary)


def natural_speed(fleet: Fleet, rate: float) -> float:
    """The speed at which the fleet's day sends ``rate`` messages per second on average."""
    return rate / fleet.natural_rate()


def play_scenarios(
    fleet: Fleet,
    publisher: Sink,
    names: Sequence[str],
    *,
    realtime: bool = True,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
    targets: dict[str, str] | None = None,
) -> list[Scenario]:
    """Play scenarios alone, together from now, each device announcing itself first.

    With ``realtime`` False every step is sent at once (tests; never for rules with durations).
    """
    stop = stop or threading.Event()
    rng = random.Random(f"{fleet.seed}:scenarios")
    t0, busy, scenarios = clock() + 0.2, set[str](), []
    for name in names:
        target = (targets or {}).get(name)
        sc = build_scenario(name, fleet, t0, rng, busy, target=target, announce=True)
        busy.update(sc.devices)
        scenarios.append(sc)
        n, s = len(sc.steps), sc.duration
        log.info("scenario %s: %s, %d messages over %.0f s", name, sc.summary, n, s)
    for step in merge(scenarios):
        if realtime:
            while (wait := t0 + step.offset - clock()) > 0 and not stop.is_set():
                stop.wait(min(wait, 0.5))
        if stop.is_set():
            break
        publisher.publish(step.topic, step.payload, step.qos, step.retain)
    return scenarios

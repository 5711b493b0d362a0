"""Incidents as timelines: ``(offset seconds, topic, payload bytes, qos, retain)`` steps.

A scenario is built at the wall time ``t0`` of its offset 0, from the fleet's own devices: it
continues each device's ``seq`` and stamps ``ts`` with ``t0 + offset`` (``late_burst`` stamps
its buffered readings with the half hour before). While a scenario plays in the day mode, the
background readings of its devices are held back (``devices``, ``lead_in``, ``quiet_for``) so
the two never contradict each other.

Scenarios play in real time even when the day runs faster: rules with a duration (a heart rate
high for ten minutes) must see the real durations.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from ingest.payloads import DeadLetterReason
from simulators.behaviour import DeviceSim, SmokeSim, WearableSim, format_ts
from simulators.fleet import Fleet

LATE_S = 1800.0
"""How long the wearable of ``late_burst`` was out of range."""
HIGH_HR = 128.0
"""At least this in ``fall`` and ``late_burst``: above the community's 120 bpm rule."""


class Step(NamedTuple):
    offset: float
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass
class Scenario:
    name: str
    summary: str
    """What happens where, for the log: device and resident ids only."""
    steps: list[Step]
    devices: tuple[str, ...] = ()
    """Devices the scenario speaks for; their background readings are held back."""
    lead_in: float = 0.0
    """Seconds before offset 0 that these devices are already silent (a wearable out of range)."""
    quiet_for: float = 0.0
    """Seconds after offset 0 they stay silent, when longer than the scenario itself."""
    expect: dict[int, DeadLetterReason] = field(default_factory=dict)
    """Step index → the dead-letter reason the service must give it (``bad_input``)."""

    @property
    def duration(self) -> float:
        return max((s.offset for s in self.steps), default=0.0)


S = TypeVar("S", bound=DeviceSim)


@dataclass
class Context:
    fleet: Fleet
    t0: float
    rng: random.Random
    busy: set[str] = field(default_factory=set)
    """Devices already playing another scenario; not chosen again."""
    announce: bool = False
    """Start with each device's retained ``status`` online (when nothing else plays)."""

    def pick(self, sims: Iterable[S], target: str | None = None) -> S:
        pool = [s for s in sims if s.device_id not in self.busy]
        if target is not None:
            pool = [s for s in pool if s.device_id == target]
        if not pool:
            raise LookupError(f"no free device for the scenario (target {target!r})")
        return self.rng.choice(pool)


class _Timeline:
    """Collects messages by offset; encodes them in time order, so each device's ``seq``
    follows its ``ts`` however the builder added them."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._items: list[tuple[float, int, Callable[[], tuple[str, bytes]], bool]] = []

    def send(
        self, offset: float, make: Callable[[], tuple[str, bytes]], retain: bool = False
    ) -> None:
        self._items.append((offset, len(self._items), make, retain))

    def hello(self, *sims: DeviceSim) -> None:
        for sim in sims if self.ctx.announce else ():
            self.status(sim, 0.0)

    def status(self, sim: DeviceSim, offset: float) -> None:
        self.send(offset, lambda: sim.status(self.ctx.t0 + offset), retain=True)

    def telemetry(
        self, sim: DeviceSim, offset: float, fields: dict[str, Any], ts: float | None = None
    ) -> None:
        at = self.ctx.t0 + offset if ts is None else ts
        self.send(offset, lambda: (sim.topic("telemetry"), sim.encode(fields, at)))

    def event(self, sim: DeviceSim, offset: float, name: str, **fields: Any) -> None:
        self.send(offset, lambda: sim.event(name, self.ctx.t0 + offset, **fields))

    def sorted(self) -> list[Step]:
        items = sorted(self._items, key=lambda item: (item[0], item[1]))
        return [Step(offset, *make(), 1, retain) for offset, _, make, retain in items]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _vitals(w: WearableSim, hr: float, rng: random.Random, spo2_drop: float = 0) -> dict[str, Any]:
    return {
        "heart_rate": round(hr + rng.gauss(0, 2)),
        "spo2": max(w.spo2_floor - 3, round(w.spo2_base - spo2_drop + rng.gauss(0, 0.5))),
        "skin_temp_c": round(w.skin_base + rng.gauss(0, 0.15), 1),
        "steps": w.steps,
        "battery": int(w.battery),
        "worn": True,
        "lat": round(w.home[0], 6),
        "lon": round(w.home[1], 6),
    }


def _neighbours(ctx: Context, target: str | None) -> tuple[SmokeSim, SmokeSim]:
    """A detector and its neighbour: same entrance and floor if the fleet has one (a subset
    may not), else the nearest floor of the building, else any other detector."""
    devices = ctx.fleet.registry.devices
    free = [s for s in ctx.fleet.smoke if s.device_id not in ctx.busy]

    def place(s: SmokeSim) -> tuple[str, int]:
        d = devices[s.device_id]
        return f"{d.building}/{s.unit.rsplit('-', 1)[0]}", d.floor or 0

    floors: dict[tuple[str, int], list[SmokeSim]] = defaultdict(list)
    for s in free:
        floors[place(s)].append(s)
    paired = [s for v in floors.values() if len(v) > 1 for s in v]
    first = ctx.pick(paired if paired and target is None else free, target)
    where, floor = place(first)
    others = [s for s in free if s is not first]
    if not others:
        raise LookupError("a fire needs two free smoke detectors")
    same_floor = [s for s in floors[(where, floor)] if s is not first]
    if same_floor:
        return first, ctx.rng.choice(same_floor)
    building = devices[first.device_id].building
    return first, min(
        others, key=lambda s: (devices[s.device_id].building != building, abs(place(s)[1] - floor))
    )


def fire(ctx: Context, target: str | None = None) -> Scenario:
    """A kitchen fire: the detector's obscuration rises until it alarms, the neighbour on the
    same floor alarms a minute later, both clear once the fire is out (about 7 minutes)."""
    fleet, rng = ctx.fleet, ctx.rng
    first, second = _neighbours(ctx, target)
    tl = _Timeline(ctx)
    tl.hello(first, second)
    plan = [(first, 0.0, 8.5, 80.0, 18.0), (second, 60.0, 5.0, 140.0, 20.0)]
    for sim, start, peak, mid, width in plan:
        alarmed, cleared = False, False
        t = start
        while t <= 420:
            level = _sigmoid((t - mid) / width) if t <= 240 else math.exp(-(t - 240) / 50)
            level *= 1 if t <= 240 else _sigmoid((240 - mid) / width)
            ob = sim.obscuration_base + peak * level + abs(rng.gauss(0, 0.02))
            fields = {
                "obscuration_pct_m": round(ob, 3),
                "temperature_c": round(22 + sim.temp_offset + 28 * level * peak / 8.5, 1),
                "co_ppm": round(1 + 70 * level * peak / 8.5 + rng.uniform(0, 2), 1),
                "battery": int(sim.battery),
            }
            tl.telemetry(sim, t, fields)
            if not alarmed and ob >= 3.0:
                alarmed = True
                tl.event(sim, t + 0.5, "alarm")
            elif alarmed and not cleared and t > 240 and ob < 1.0:
                cleared = True
                tl.event(sim, t + 0.5, "alarm_clear")
            t += 10 if t < 240 else 15
        if alarmed and not cleared:
            tl.event(sim, 421.0, "alarm_clear")
    unit = fleet.registry.devices[first.device_id].unit
    return Scenario(
        "fire",
        f"fire in unit {unit}: {first.device_id}, then {second.device_id}",
        tl.sorted(),
        (first.device_id, second.device_id),
    )


def fall(ctx: Context, target: str | None = None) -> Scenario:
    """A fall, then a heart rate of 125 bpm or more for twelve minutes."""
    w = ctx.pick(ctx.fleet.wearables, target)
    tl, rng = _Timeline(ctx), ctx.rng
    tl.hello(w)
    tl.event(w, 0.0, "fall")
    for t in range(20, 901, 30):
        high = max(w.hr_base + 50, HIGH_HR)
        hr = high if t < 740 else high - (high - w.hr_base - 10) * (t - 740) / 160
        tl.telemetry(w, float(t), _vitals(w, hr, rng, spo2_drop=2))
    return Scenario(
        "fall", f"fall: {w.device_id} (resident {w.resident_id})", tl.sorted(), (w.device_id,)
    )


def sos(ctx: Context, target: str | None = None) -> Scenario:
    """The SOS button, pressed twice, with a somewhat raised heart rate."""
    w = ctx.pick(ctx.fleet.wearables, target)
    tl, rng = _Timeline(ctx), ctx.rng
    tl.hello(w)
    tl.event(w, 0.0, "sos")
    tl.event(w, 25.0, "sos")
    for t in (15.0, 45.0, 75.0):
        tl.telemetry(w, t, _vitals(w, w.hr_base + 18, rng))
    return Scenario(
        "sos", f"sos: {w.device_id} (resident {w.resident_id})", tl.sorted(), (w.device_id,)
    )


def gate_forced_night(ctx: Context, target: str | None = None) -> Scenario:
    """A building door forced open at night, held open, closed three minutes later. In the day
    mode it is played only when the simulated clock is between midnight and five."""
    doors = [g for g in ctx.fleet.gates if ctx.fleet.registry.devices[g.device_id].building]
    g = ctx.pick(doors or ctx.fleet.gates, target)
    tl = _Timeline(ctx)
    tl.hello(g)
    tl.event(g, 0.0, "forced")
    tl.event(g, 40.0, "held_open")
    tl.event(g, 150.0, "closed")
    return Scenario("gate_forced_night", f"door forced: {g.device_id}", tl.sorted(), (g.device_id,))


def denied_burst(ctx: Context, target: str | None = None) -> Scenario:
    """Eight denied attempts at one compound entrance within a minute (someone trying cards)."""
    mains = [g for g in ctx.fleet.gates if ctx.fleet.registry.devices[g.device_id].building is None]
    g = ctx.pick(mains or ctx.fleet.gates, target)
    tl, rng = _Timeline(ctx), ctx.rng
    tl.hello(g)
    card = f"{rng.getrandbits(40):010x}"
    offsets = [0.0, *sorted(round(rng.uniform(1, 55), 1) for _ in range(7))]
    for i, t in enumerate(offsets):
        if i in (3, 6):
            tl.event(g, t, "denied", direction="in", method="pin")
        else:
            tl.event(g, t, "denied", direction="in", method="card", credential=card)
    return Scenario(
        "denied_burst", f"8 denied in a minute: {g.device_id}", tl.sorted(), (g.device_id,)
    )


def wearable_silent(ctx: Context, target: str | None = None) -> Scenario:
    """A wearable sends one last reading, then nothing for 40 minutes."""
    w = ctx.pick(ctx.fleet.wearables, target)
    tl = _Timeline(ctx)
    tl.hello(w)
    tl.telemetry(w, 0.0, _vitals(w, w.hr_base, ctx.rng))
    return Scenario(
        "wearable_silent",
        f"silent: {w.device_id} (resident {w.resident_id})",
        tl.sorted(),
        (w.device_id,),
        quiet_for=2400.0,
    )


def wandering(ctx: Context, target: str | None = None) -> Scenario:
    """A resident with an allowed area walks out of it and keeps going for fifteen minutes."""
    residents = ctx.fleet.registry.residents
    zoned = [w for w in ctx.fleet.wearables if residents[w.resident_id].allowed_area]
    w = ctx.pick(zoned, target)
    tl, rng = _Timeline(ctx), ctx.rng
    tl.hello(w)
    bearing = rng.uniform(0, 2 * math.pi)
    metres_per_degree = 111_320.0
    for t in range(0, 901, 30):
        walked = 1.1 * t
        fields = _vitals(w, w.hr_base + 12, rng)
        fields["steps"] = w.steps = w.steps + (40 if t else 0)
        north, east = walked * math.cos(bearing), walked * math.sin(bearing)
        fields["lat"] = round(w.home[0] + north / metres_per_degree, 6)
        lon_scale = metres_per_degree * math.cos(math.radians(w.home[0]))
        fields["lon"] = round(w.home[1] + east / lon_scale, 6)
        tl.telemetry(w, float(t), fields)
    summary = f"wandering: {w.device_id} (resident {w.resident_id})"
    return Scenario("wandering", summary, tl.sorted(), (w.device_id,))


def late_burst(ctx: Context, target: str | None = None) -> Scenario:
    """A wearable out of range for 30 minutes reconnects and uploads what it buffered, with the
    old ``ts``: 30 readings a minute apart, the heart rate high for 15 of them."""
    w = ctx.pick(ctx.fleet.wearables, target)
    tl, rng = _Timeline(ctx), ctx.rng
    tl.status(w, 0.0)
    for i in range(30):
        high = 8 <= i < 23
        fields = _vitals(w, max(w.hr_base + 48, HIGH_HR) if high else w.hr_base, rng)
        fields["steps"] = w.steps = w.steps + (0 if high else rng.randrange(0, 40))
        ts = ctx.t0 - LATE_S + 60 * i
        tl.telemetry(w, 0.05 * (i + 1), fields, ts=ts)
    return Scenario(
        "late_burst",
        f"late burst: {w.device_id} (resident {w.resident_id})",
        tl.sorted(),
        (w.device_id,),
        lead_in=LATE_S,
    )


def bad_input(ctx: Context, target: str | None = None) -> Scenario:
    """One message of every kind the service must turn into a dead letter, with its reason."""
    f, c = ctx.fleet, ctx.fleet.community
    w = f.wearables[0].device_id if f.wearables else "wr-00001"
    s = f.smoke[0].device_id if f.smoke else "smk-1"
    g = f.gates[0].device_id if f.gates else "gate-1"
    ts = str(format_ts(ctx.t0, "rfc3339"))
    wt, st = f"community/{c}/wearable/{w}/telemetry", f"community/{c}/smoke/{s}/telemetry"
    items: list[tuple[DeadLetterReason, str, bytes]] = [
        ("not_json", wt, b'{"heart_rate": 72, "spo2": 97'),
        ("not_json", wt, b"HR=72;SPO2=97"),
        ("not_object", wt, b"[72, 97, 33.1]"),
        ("bad_utf8", wt, b'{"heart_rate": 72, "note": "\xc3\x28\xff"}'),
        ("wrong_type", wt, b'{"heart_rate": "fast", "ts": "%s"}' % ts.encode()),
        ("wrong_type", st, b'{"obscuration_pct_m": [0.1], "battery": 80}'),
        ("out_of_range", wt, b'{"heart_rate": 400, "spo2": 97}'),
        ("out_of_range", wt, b'{"spo2": 120}'),
        ("out_of_range", st, b'{"temperature_c": -80.5}'),
        ("unknown_topic", f"community/{c}/lamp/lamp-01/telemetry", b'{"on": true}'),
        ("unknown_topic", f"community/{c}/wearable/{w}/location", b'{"lat": 36.05}'),
        ("unknown_topic", f"community/{c}/smoke/smk.01!/telemetry", b'{"battery": 90}'),
        ("too_large", wt, b'{"heart_rate": 72, "blob": "%s"}' % (b"x" * 5000)),
        ("missing_field", f"community/{c}/smoke/{s}/event", b'{"ts": "%s"}' % ts.encode()),
        ("missing_field", f"community/{c}/gate/{g}/status", b'{"fw": "GT-5.1.0"}'),
        ("bad_value", f"community/{c}/wearable/{w}/event", b'{"event": "explode"}'),
        ("bad_value", f"community/{c}/gate/{g}/event", b'{"event": "granted", "method": "x"}'),
        ("too_deep", wt, b'{"heart_rate": 72, "x": %s}' % (b"[" * 40 + b"]" * 40)),
        ("too_large_number", wt, b'{"heart_rate": 72, "seq": 18446744073709551615}'),
        ("duplicate_key", wt, b'{"heart_rate": 72, "heart_rate": 190}'),
        ("lone_surrogate", wt, b'{"heart_rate": 72, "note": "\\ud800"}'),
    ]
    steps = [Step(0.2 * i, topic, payload) for i, (_, topic, payload) in enumerate(items)]
    expect = {i: reason for i, (reason, _, _) in enumerate(items)}
    return Scenario("bad_input", f"{len(items)} bad messages", steps, expect=expect)


@dataclass(frozen=True, slots=True)
class Spec:
    build: Callable[[Context, str | None], Scenario]
    weight: float
    """How often the day mode picks it among incidents."""
    night_only: bool = False
    lead_in: float = 0.0
    """Seconds its devices fall silent before it starts (see :attr:`Scenario.lead_in`)."""

    @property
    def help(self) -> str:
        text = " ".join((self.build.__doc__ or "").split("\n\n")[0].split())
        return text.replace("``", "").split(". ")[0].rstrip(".") + "."


SCENARIOS: dict[str, Spec] = {
    "fire": Spec(fire, 0.5),
    "fall": Spec(fall, 3),
    "sos": Spec(sos, 2),
    "gate_forced_night": Spec(gate_forced_night, 4, night_only=True),
    "denied_burst": Spec(denied_burst, 2),
    "wearable_silent": Spec(wearable_silent, 1),
    "late_burst": Spec(late_burst, 1, lead_in=LATE_S),
    "wandering": Spec(wandering, 1),
    "bad_input": Spec(bad_input, 1),
}


def build_scenario(
    name: str,
    fleet: Fleet,
    t0: float,
    rng: random.Random | None = None,
    busy: set[str] | None = None,
    target: str | None = None,
    announce: bool = False,
) -> Scenario:
    """Build the named scenario starting at wall time ``t0``; KeyError for an unknown name,
    LookupError when no device is free for it (or ``target`` does not fit)."""
    rng = rng or random.Random(f"{fleet.seed}:{name}")
    ctx = Context(fleet, t0, rng, busy or set(), announce)
    return SCENARIOS[name].build(ctx, target)


def merge(scenarios: Iterable[Scenario]) -> list[Step]:
    """The steps of several scenarios that start together, in one timeline."""
    return sorted((s for sc in scenarios for s in sc.steps), key=lambda s: s.offset)
